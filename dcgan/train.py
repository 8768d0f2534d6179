"""The training step and loop."""

import contextlib
import functools
import json
import logging
import signal
import threading
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from dcgan import checkpointing, images, losses, metric_writers, models
from dcgan import sampling, validation
from dcgan import state as state_lib
from dcgan.data import pipeline

Metrics = dict[str, jnp.ndarray]
TrainStep = Callable[[state_lib.GANState, dict[str, jnp.ndarray], jax.Array],
                     tuple[state_lib.GANState, Metrics]]


class Updates(NamedTuple):
  """The two halves of a training step.

  d_update(state, real, latents) -> (state, metrics): one D update on the real
    batch (B, H, W, 3) and on G(latents), G's parameters held fixed.
  g_update(state, latents) -> (state, metrics): one G update through D, D's
    parameters held fixed.

  BatchNorm: as in the tutorial, both networks always run in train mode here
  (normalising with the statistics of the batch at hand, real and generated
  batches in separate D calls), and every forward pass moves the running
  averages of the network it passes through. So G's running averages also move
  in the D update, and D's move in each G update, while D's parameters stay
  fixed there. Training never reads the running averages; eval-mode G (the
  sample grids) does.
  """
  d_update: Callable
  g_update: Callable


def _apply_gradients(tx: optax.GradientTransformation, grads, params,
                     opt_state):
  """One optimizer step: (new params, new optimizer state)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def make_updates(config, generator: models.Generator,
                 discriminator: models.Discriminator,
                 g_tx: optax.GradientTransformation,
                 d_tx: optax.GradientTransformation) -> Updates:
  """Builds the D and G updates (not jitted) for `make_train_step`."""
  def run_g(params, batch_stats, latents):
    fake, updates = generator.apply(
        {'params': params, 'batch_stats': batch_stats}, latents, train=True,
        mutable=['batch_stats'])
    return fake, updates['batch_stats']

  def run_d(params, batch_stats, images_):
    logits, updates = discriminator.apply(
        {'params': params, 'batch_stats': batch_stats}, images_, train=True,
        mutable=['batch_stats'])
    return logits, updates['batch_stats']

  def d_update(state, real, latents):
    fake, g_batch_stats = run_g(state.g_params, state.g_batch_stats, latents)
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(d_params):
      real_logits, d_batch_stats = run_d(d_params, state.d_batch_stats, real)
      fake_logits, d_batch_stats = run_d(d_params, d_batch_stats, fake)
      loss, terms = losses.discriminator_loss(real_logits, fake_logits)
      return loss, (d_batch_stats, terms, real_logits, fake_logits)

    (loss, (d_batch_stats, terms, real_logits, fake_logits)), grads = (
        jax.value_and_grad(loss_fn, has_aux=True)(state.d_params))
    d_params, d_opt_state = _apply_gradients(d_tx, grads, state.d_params,
                                             state.d_opt_state)
    state = state.replace(
        d_params=d_params, d_opt_state=d_opt_state,
        d_batch_stats=d_batch_stats, g_batch_stats=g_batch_stats)
    metrics = {
        'd_loss': loss, **terms,
        'd_real': jnp.mean(jax.nn.sigmoid(real_logits)),
        'd_fake': jnp.mean(jax.nn.sigmoid(fake_logits)),
        'd_grad_norm': optax.tree.norm(grads),
    }
    return state, metrics

  def g_update(state, latents):
    def loss_fn(g_params):
      fake, g_batch_stats = run_g(g_params, state.g_batch_stats, latents)
      fake_logits, d_batch_stats = run_d(state.d_params, state.d_batch_stats,
                                         fake)
      loss = losses.generator_loss(fake_logits, config.g_loss)
      return loss, (g_batch_stats, d_batch_stats)

    (loss, (g_batch_stats, d_batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.g_params)
    g_params, g_opt_state = _apply_gradients(g_tx, grads, state.g_params,
                                             state.g_opt_state)
    state = state.replace(
        g_params=g_params, g_opt_state=g_opt_state,
        g_batch_stats=g_batch_stats, d_batch_stats=d_batch_stats)
    return state, {'g_loss': loss, 'g_grad_norm': optax.tree.norm(grads)}

  return Updates(d_update, g_update)


def make_train_step(config, generator: models.Generator,
                    discriminator: models.Discriminator,
                    g_tx: optax.GradientTransformation,
                    d_tx: optax.GradientTransformation) -> TrainStep:
  """Builds `train_step(state, batch, rng) -> (state, metrics)` (not jitted).

  One step is the tutorial's iteration: one D update on a real batch and a
  generated batch, then `config.g_steps_per_d_step` G updates, each against the
  freshly updated D (see `Updates` for what happens to BatchNorm statistics).
  With `config.g_reuse_latents` (the tutorial's choice) the G updates use the D
  update's latents; otherwise each draws its own.

  `rng` is the run's root training key; the step folds its step number into
  it, so a resumed run draws exactly the same latents. `metrics` is a flat dict
  of scalars.
  """
  d_update, g_update = make_updates(config, generator, discriminator, g_tx,
                                    d_tx)
  num_g_steps = config.g_steps_per_d_step

  def train_step(state, batch, rng):
    real = batch['image']
    step_rng = jax.random.fold_in(rng, state.step)
    latent_rngs = jax.random.split(step_rng, 1 + num_g_steps)

    def latents_for(i):
      return sampling.sample_latents(latent_rngs[i], real.shape[0],
                                     config.latent_dim, config.latent_dist)

    d_latents = latents_for(0)
    state, metrics = d_update(state, real, d_latents)
    g_metrics = []
    for i in range(num_g_steps):
      latents = d_latents if config.g_reuse_latents else latents_for(1 + i)
      state, m = g_update(state, latents)
      g_metrics.append(m)
    # The G loss of the last G step, the gradient norm averaged over them.
    metrics['g_loss'] = g_metrics[-1]['g_loss']
    metrics['g_grad_norm'] = jnp.mean(
        jnp.stack([m['g_grad_norm'] for m in g_metrics]))
    return state.replace(step=state.step + 1), metrics

  return train_step


def create_mesh() -> jax.sharding.Mesh:
  """All devices on one 'data' axis: batches split, state replicated.

  The axis is of Auto type: XLA propagates the batch sharding through the
  model, which needs no sharding annotations.
  """
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def jit_train_step(train_step: TrainStep) -> TrainStep:
  """Compiles the step once; the old state's buffers are reused (donated)."""
  return jax.jit(train_step, donate_argnums=0)


class _StopOnSignal:
  """Turns the first SIGINT/SIGTERM into a request to stop after this step.

  A second signal restores the default handlers and re-raises, so it stops at
  once.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.requested = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested is not None:
      self.__exit__()
      signal.raise_signal(signum)
      return
    self.requested = signal.Signals(signum).name
    logging.warning('%s received: stopping after this step and saving a '
                    'checkpoint (send it again to stop at once).',
                    self.requested)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}


def _write_config(config, workdir: epath.Path) -> dict[str, Any]:
  config_dict = json.loads(config.to_json_best_effort())
  (workdir / 'config.json').write_text(
      json.dumps(config_dict, indent=2, sort_keys=True) + '\n')
  return config_dict


def _check_resumed_config(saved: dict[str, Any] | None,
                          current: dict[str, Any]) -> None:
  """Warns about config values that differ from the checkpoint's."""
  if not saved:
    return
  def flatten(d, prefix=''):
    for k, v in d.items():
      if isinstance(v, dict):
        yield from flatten(v, f'{prefix}{k}.')
      else:
        yield f'{prefix}{k}', v
  saved_flat, current_flat = dict(flatten(saved)), dict(flatten(current))
  changed = sorted(k for k in current_flat
                   if saved_flat.get(k, current_flat[k]) != current_flat[k])
  for key in changed:
    logging.warning('Resuming with config.%s=%r (the checkpoint has %r).',
                    key, current_flat[key], saved_flat[key])


def save_sample_grid(generator, state, latents, workdir: epath.Path,
                     writer=None) -> epath.Path:
  """Writes `<workdir>/samples/step_<N>.png` from the fixed latents."""
  step = int(jax.device_get(state.step))
  fake = _generate_jit(generator, state.g_params, state.g_batch_stats, latents)
  grid = images.make_grid(sampling.to_uint8(jax.device_get(fake)))
  path = images.save_png(grid, workdir / 'samples' / f'step_{step}.png')
  if writer is not None:
    writer.write_image(step, 'samples', grid)
  return path


@functools.partial(jax.jit, static_argnums=0)
def _generate_jit(generator, g_params, g_batch_stats, latents):
  return sampling.generate(generator, g_params, g_batch_stats, latents)


def train_and_evaluate(config, workdir: epath.PathLike) -> state_lib.GANState:
  """Trains until `config.num_train_steps`, resuming from `workdir`.

  Writes `<workdir>/config.json`, `checkpoints/`, `samples/step_<N>.png`,
  `metrics.jsonl` and `tensorboard/`. SIGINT or SIGTERM stops after the current
  step with a checkpoint.

  Returns:
    The final state.
  """
  validation.validate_config(config)
  workdir = epath.Path(workdir).resolve()  # orbax wants absolute paths
  workdir.mkdir(parents=True, exist_ok=True)
  config_dict = _write_config(config, workdir)

  mesh = create_mesh()
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P('data'))

  generator, discriminator = models.create_models(config.model,
                                                  config.image_size)
  g_tx, d_tx = state_lib.create_optimizers(config)
  state = jax.device_put(
      state_lib.create_state(config, generator, discriminator, g_tx, d_tx),
      replicated)

  data_iterator = pipeline.create_train_iterator(
      config.data, image_size=config.image_size,
      batch_size=config.batch_size, seed=config.seed)
  manager = checkpointing.create_manager(workdir / 'checkpoints',
                                         keep=config.keep_checkpoints)
  restored = checkpointing.restore(manager, state, data_iterator)
  if restored is not None:
    state, saved_config = restored
    _check_resumed_config(saved_config, config_dict)
  start_step = int(jax.device_get(state.step))
  logging.info('Training from step %d to %d in %s', start_step,
               config.num_train_steps, workdir)

  train_step = jit_train_step(
      make_train_step(config, generator, discriminator, g_tx, d_tx))
  # A copy: the step donates the state, so its rng buffer is reused.
  train_rng = jax.device_put(
      jax.random.wrap_key_data(jnp.array(state.rng, copy=True)), replicated)
  latents = jax.device_put(sampling.fixed_latents(config), replicated)

  writer = metric_writers.MetricWriter(workdir)
  bar = metric_writers.ProgressBar(config.num_train_steps, start_step,
                                   config.batch_size)
  step = start_step
  with _StopOnSignal() as stop, contextlib.closing(writer):
    if start_step == 0:
      save_sample_grid(generator, state, latents, workdir, writer)
    while step < config.num_train_steps:
      batch = next(data_iterator)
      batch = {'image': jax.device_put(batch['image'], data_sharding)}
      state, metrics = train_step(state, batch, train_rng)
      step += 1
      bar.update(step)
      last = step == config.num_train_steps
      if step % config.log_every_steps == 0 or last:
        metrics = jax.device_get(metrics)
        metrics['images_per_second'] = bar.rate(step)
        writer.write_scalars(step, metrics)
        logging.info('step %d: %s', step, ', '.join(
            f'{k}={float(v):.4g}' for k, v in sorted(metrics.items())))
      if step % config.sample_every_steps == 0 or last or stop.requested:
        save_sample_grid(generator, state, latents, workdir, writer)
      if (step % config.checkpoint_every_steps == 0 or last or
          stop.requested):
        checkpointing.save(manager, state, config_dict, data_iterator)
      if stop.requested:
        logging.warning('Stopped by %s at step %d; the same command resumes.',
                        stop.requested, step)
        break
  bar.close()
  manager.close()
  return state
