"""The training step and loop."""

import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from dcgan import checkpointing, compile_cache, errors, heap, health, images
from dcgan import losses
from dcgan import metric_writers
from dcgan import models, sampling, validation
from dcgan import state as state_lib
from dcgan import workdir as workdir_lib
from dcgan.data import pipeline

BEST_FILE = 'best.json'  # in <workdir>/best/: the best checkpoint's scores

Metrics = dict[str, jnp.ndarray]
TrainStep = Callable[[state_lib.GANState, dict[str, jnp.ndarray], jax.Array],
                     tuple[state_lib.GANState, Metrics]]


class Updates(NamedTuple):
  """The halves of a training step.

  d_update(state, real, latents[, lr_scale]) -> (state, metrics): one D update
    on the real batch (B, H, W, 3) and on G(latents), G's parameters held
    fixed.
  g_update(state, latents[, lr_scale]) -> (state, metrics): one G update
    through D, D's parameters held fixed.
  d_then_g_update(state, real, latents[, lr_scale]) -> (state, d_metrics,
    g_metrics): d_update then g_update on the same latents, computed with ONE
    forward pass of G: G's parameters do not change in between, so the first
    G update's fakes are the D update's. Same result as the two calls (up to
    float rounding), ~6% fewer FLOPs per reference-recipe step.
  An optional `lr_scale` (a float32 scalar) multiplies the optimizer's
  updates, i.e. the learning rate, without recompiling when it changes.

  BatchNorm: as in the tutorial, both networks always run in train mode here
  (normalising with the statistics of the batch at hand, real and generated
  batches in separate D calls), and every forward pass moves the running
  averages of the network it passes through. So G's running averages also move
  in the D update, and D's move in each G update, while D's parameters stay
  fixed there (d_then_g_update moves G's twice, as the two passes it stands
  for would). Training never reads the running averages; eval-mode G (the
  sample grids) does.
  """
  d_update: Callable
  g_update: Callable
  d_then_g_update: Callable


def _apply_gradients(tx: optax.GradientTransformation, grads, params,
                     opt_state, lr_scale=None):
  """One optimizer step: (new params, new optimizer state).

  `lr_scale` multiplies the updates (for Adam, the same as the learning
  rate); at 1.0 the result is bit for bit that without it.
  """
  updates, opt_state = tx.update(grads, opt_state, params)
  if lr_scale is not None:
    updates = jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)
  return optax.apply_updates(params, updates), opt_state


def make_updates(config, generator: models.Generator,
                 discriminator: models.Discriminator,
                 g_tx: optax.GradientTransformation,
                 d_tx: optax.GradientTransformation) -> Updates:
  """Builds the D and G updates (not jitted) for `make_train_step`."""
  def run_g_vjp(state, latents, running_average_updates=1):
    """G(latents) as (fake, vjp from d fake to d g_params, G's batch stats)."""
    def run(params):
      fake, updates = generator.apply(
          {'params': params, 'batch_stats': state.g_batch_stats}, latents,
          train=True, running_average_updates=running_average_updates,
          mutable=['batch_stats'])
      return fake, updates['batch_stats']
    return jax.vjp(run, state.g_params, has_aux=True)

  def run_d(params, batch_stats, images_):
    logits, updates = discriminator.apply(
        {'params': params, 'batch_stats': batch_stats}, images_, train=True,
        mutable=['batch_stats'])
    return logits, updates['batch_stats']

  def d_step(state, real, fake, lr_scale):
    """The D update against the generated batch `fake`."""
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(d_params):
      real_logits, d_batch_stats = run_d(d_params, state.d_batch_stats, real)
      fake_logits, d_batch_stats = run_d(d_params, d_batch_stats, fake)
      loss, terms = losses.discriminator_loss(real_logits, fake_logits)
      return loss, (d_batch_stats, terms, real_logits, fake_logits)

    (loss, (d_batch_stats, terms, real_logits, fake_logits)), grads = (
        jax.value_and_grad(loss_fn, has_aux=True)(state.d_params))
    d_params, d_opt_state = _apply_gradients(d_tx, grads, state.d_params,
                                             state.d_opt_state, lr_scale)
    state = state.replace(d_params=d_params, d_opt_state=d_opt_state,
                          d_batch_stats=d_batch_stats)
    metrics = {
        'd_loss': loss, **terms,
        'd_real': jnp.mean(jax.nn.sigmoid(real_logits)),
        'd_fake': jnp.mean(jax.nn.sigmoid(fake_logits)),
        'd_grad_norm': optax.tree.norm(grads),
    }
    return state, metrics

  def g_step(state, fake, g_vjp, lr_scale):
    """The G update from G's forward pass (`fake` and its `g_vjp`)."""
    def loss_fn(fake):
      fake_logits, d_batch_stats = run_d(state.d_params, state.d_batch_stats,
                                         fake)
      return losses.generator_loss(fake_logits, config.g_loss), d_batch_stats

    (loss, d_batch_stats), d_fake = jax.value_and_grad(
        loss_fn, has_aux=True)(fake)
    grads, = g_vjp(d_fake)
    g_params, g_opt_state = _apply_gradients(g_tx, grads, state.g_params,
                                             state.g_opt_state, lr_scale)
    state = state.replace(g_params=g_params, g_opt_state=g_opt_state,
                          d_batch_stats=d_batch_stats)
    return state, {'g_loss': loss, 'g_grad_norm': optax.tree.norm(grads)}

  def d_update(state, real, latents, lr_scale=None):
    fake, _, g_batch_stats = run_g_vjp(state, latents)
    return d_step(state.replace(g_batch_stats=g_batch_stats), real, fake,
                  lr_scale)

  def g_update(state, latents, lr_scale=None):
    fake, g_vjp, g_batch_stats = run_g_vjp(state, latents)
    return g_step(state.replace(g_batch_stats=g_batch_stats), fake, g_vjp,
                  lr_scale)

  def d_then_g_update(state, real, latents, lr_scale=None):
    fake, g_vjp, g_batch_stats = run_g_vjp(state, latents,
                                           running_average_updates=2)
    state, d_metrics = d_step(state.replace(g_batch_stats=g_batch_stats),
                              real, fake, lr_scale)
    state, g_metrics = g_step(state, fake, g_vjp, lr_scale)
    return state, d_metrics, g_metrics

  return Updates(d_update, g_update, d_then_g_update)


def make_train_step(config, generator: models.Generator,
                    discriminator: models.Discriminator,
                    g_tx: optax.GradientTransformation,
                    d_tx: optax.GradientTransformation) -> TrainStep:
  """Builds `train_step(state, batch, rng[, lr_scale]) -> (state, metrics)`.

  One step is the tutorial's iteration: one D update on a real batch and a
  generated batch, then `config.g_steps_per_d_step` G updates, each against the
  freshly updated D (see `Updates` for what happens to BatchNorm statistics).
  With `config.g_reuse_latents` (the tutorial's choice) the G updates use the D
  update's latents, and the first of them shares the D update's forward pass
  of G (`Updates.d_then_g_update`); otherwise each draws its own.

  `rng` is the run's root training key; the step folds its step number into
  it, so a resumed run draws exactly the same latents. `metrics` is a flat dict
  of scalars. `lr_scale` (optional, a float32 scalar) multiplies both learning
  rates (see `Updates`). Not jitted.
  """
  updates = make_updates(config, generator, discriminator, g_tx, d_tx)
  num_g_steps = config.g_steps_per_d_step

  def train_step(state, batch, rng, lr_scale=None):
    real = batch['image']
    step_rng = jax.random.fold_in(rng, state.step)
    latent_rngs = jax.random.split(step_rng, 1 + num_g_steps)

    def latents_for(i):
      return sampling.sample_latents(latent_rngs[i], real.shape[0],
                                     config.latent_dim, config.latent_dist)

    d_latents = latents_for(0)
    g_metrics = []
    if config.g_reuse_latents and num_g_steps:
      # The first G update shares the D update's forward pass of G.
      state, metrics, m = updates.d_then_g_update(state, real, d_latents,
                                                  lr_scale)
      g_metrics.append(m)
    else:
      state, metrics = updates.d_update(state, real, d_latents, lr_scale)
    for i in range(len(g_metrics), num_g_steps):
      latents = d_latents if config.g_reuse_latents else latents_for(1 + i)
      state, m = updates.g_update(state, latents, lr_scale)
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

  A second signal restores the previous handlers and re-raises, so it stops at
  once, wherever it is; the checkpoints on disk stay whole (orbax renames a
  checkpoint into place only once it is complete).
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


def _write_config(config_dict: dict[str, Any], workdir: epath.Path) -> None:
  """Writes `<workdir>/config.json` whole (via a temporary file and rename)."""
  path = workdir / 'config.json'
  tmp = workdir / 'config.json.tmp'
  tmp.write_text(json.dumps(config_dict, indent=2, sort_keys=True) + '\n')
  os.replace(tmp, path)


def _config_changes(saved: dict[str, Any],
                    current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
  """(key, current value, saved value) of each value that differs.

  Keys the saved config lacks (added since it was written) are left out.
  """
  def flatten(d, prefix=''):
    for k, v in d.items():
      if isinstance(v, dict):
        yield from flatten(v, f'{prefix}{k}.')
      else:
        yield f'{prefix}{k}', v
  saved_flat, current_flat = dict(flatten(saved)), dict(flatten(current))
  return [(k, current_flat[k], saved_flat[k]) for k in sorted(current_flat)
          if saved_flat.get(k, current_flat[k]) != current_flat[k]]


def _check_resumed_config(saved: dict[str, Any] | None,
                          current: dict[str, Any]) -> None:
  """Warns about config values that differ from the checkpoint's."""
  for key, now, then in _config_changes(saved or {}, current):
    logging.warning('Resuming with config.%s=%r (the checkpoint has %r).',
                    key, now, then)


def _with_value(config_dict: dict[str, Any], key: str, value):
  """A ConfigDict of `config_dict` with the dotted `key` set to `value`."""
  config = ml_collections.ConfigDict(config_dict)
  *parents, name = key.split('.')
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = value
  return config


def _state_shapes(state) -> list[tuple[str, tuple, str]]:
  """(path, shape, dtype) of each array of a state (or abstract state)."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [(jax.tree_util.keystr(path), tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in leaves]


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


_state_is_finite = jax.jit(health.is_finite)


class _Run:
  """A training run in a workdir: its state and everything around it.

  `train()` is the loop; each thing it does at a step (log, check health,
  roll back, write samples, save) is one method, so more slot in.
  """

  def __init__(self, config, workdir: epath.Path):
    self._closing = contextlib.ExitStack()
    try:
      self._set_up(config, workdir)
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    self._closing.close()

  # -------------------------------------------------------------- set-up

  def _set_up(self, config, workdir: epath.Path) -> None:
    self.config = config
    self.workdir = workdir
    self.config_dict = json.loads(config.to_json_best_effort())
    mesh = create_mesh()
    self.replicated = NamedSharding(mesh, P())
    self.data_sharding = NamedSharding(mesh, P('data'))
    self.generator, self.discriminator = models.create_models(
        config.model, config.image_size)
    self.data_iterator = pipeline.create_train_iterator(
        config.data, image_size=config.image_size,
        batch_size=config.batch_size, seed=config.seed)
    self.initial_data_position = self.data_iterator.get_state()
    self.manager = checkpointing.create_manager(workdir / 'checkpoints',
                                                keep=config.keep_checkpoints)
    self._closing.callback(self.manager.close)
    self.state = self._fresh_state()
    self._refuse_other_shapes()  # before anything is written
    self.writer = metric_writers.MetricWriter(workdir)
    self._closing.callback(self.writer.close)
    self.latents = jax.device_put(sampling.fixed_latents(config),
                                  self.replicated)
    self.record = health.Record()
    self._reference = self._extractor = self._best_manager = None
    self._restore_at_start()
    # Only now: a start refused above leaves the run's config.json as it was.
    _write_config(self.config_dict, workdir)
    self.step = int(jax.device_get(self.state.step))
    # A copy: the step donates the state, so its rng buffer is reused.
    self.train_rng = jax.device_put(
        jax.random.wrap_key_data(jnp.array(self.state.rng, copy=True)),
        self.replicated)
    self.monitor = self._fresh_monitor()
    self._step_fn = self._build_step()
    self._set_controls()
    self.bar = metric_writers.ProgressBar(config.num_train_steps, self.step,
                                          config.batch_size)
    # Through a lambda: a rollback replaces the bar.
    self._closing.callback(
        lambda: self.bar.close())  # pylint: disable=unnecessary-lambda

  def _fresh_state(self) -> state_lib.GANState:
    g_tx, d_tx = state_lib.create_optimizers(self.config)
    return jax.device_put(
        state_lib.create_state(self.config, self.generator,
                               self.discriminator, g_tx, d_tx),
        self.replicated)

  def _fresh_monitor(self) -> health.Monitor:
    return jax.device_put(health.init_monitor(self.record.collapse_streak),
                          self.replicated)

  def _restore_at_start(self) -> None:
    restored = checkpointing.restore_latest_good(
        self.manager, self.state, self.data_iterator,
        check_state=lambda s: bool(_state_is_finite(s)))
    if restored is None:
      return
    self.state = restored.state
    self.record = health.Record.from_json(restored.health)
    _check_resumed_config(restored.config, self.config_dict)
    self._report_skipped(restored)
    self.writer.write_event(restored.step, 'resumed',
                            **health.remedy_summary(self.record,
                                                    self.config.health))

  def _refuse_other_shapes(self) -> None:
    """Stops if the newest checkpoint's config gives `self.state` other shapes.

    A changed image size or layer width cannot resume: say which config
    values differ before orbax fails on the first array that does not fit.
    """
    step = self.manager.latest_step()
    saved = None if step is None else checkpointing.saved_config(
        self.manager, step)
    if not saved:
      return
    try:
      theirs = _state_shapes(state_lib.abstract_state(
          ml_collections.ConfigDict(saved)))
    except Exception:  # pylint: disable=broad-exception-caught
      return  # a config this code cannot build: the restore will say more
    ours = _state_shapes(self.state)
    if theirs == ours:
      return
    changes = _config_changes(saved, self.config_dict)
    if len(changes) > 1:  # name those that change shapes on their own
      alone = [(key, now, then) for key, now, then in changes
               if _state_shapes(state_lib.abstract_state(
                   _with_value(saved, key, now))) != theirs]
      changes = alone or changes
    differing = next(((a, b) for a, b in zip(ours, theirs) if a != b), None)
    where = (f'state{differing[0][0]} is {differing[0][1]} {differing[0][2]} '
             f'here and {differing[1][1]} {differing[1][2]} there'
             if differing and differing[0][0] == differing[1][0] else
             'the state has other parts')
    why = ('This config differs from theirs in: ' + ', '.join(
        f'config.{k} = {now!r} (theirs: {then!r})'
        for k, now, then in changes) + '. Resume with their values'
           if changes else
           'Their config is this one: this version of the code builds the '
           'model differently. Resume with the version that wrote them')
    raise errors.RunError(
        f'The checkpoints in {self.workdir} hold a model of other shapes than '
        f'this config gives ({where}; checkpoint {step}). {why}, or train in '
        'another --workdir. Nothing in the workdir was changed.')

  def _report_skipped(self, restored: checkpointing.Restored) -> None:
    for skipped in restored.skipped:
      self.writer.write_event(
          restored.step, 'damaged_checkpoint', damaged_step=skipped['step'],
          reason=skipped['reason'], moved_to=skipped['moved_to'])

  def _build_step(self):
    """The jitted step with its health monitor, compiled once per run.

    What a rollback changes (the learning-rate scale, whether the debug NaN
    is still injected) and the collapse thresholds come in as device scalars
    (`_set_controls`), so a rollback recompiles nothing.
    """
    config = self.config
    g_tx, d_tx = state_lib.create_optimizers(config)
    train_step = make_train_step(config, self.generator, self.discriminator,
                                 g_tx, d_tx)
    inject = config.debug.nan_at_step > 0

    def guarded_step(state, monitor, batch, rng, controls):
      images_ = batch['image']
      if inject:  # only then is it part of the program
        images_ = health.inject_nan(images_, state.step, controls['nan_at'])
      state, metrics = train_step(state, {'image': images_}, rng,
                                  controls['lr_scale'])
      monitor = health.update_monitor(monitor, metrics, state.step, controls)
      return state, monitor, metrics

    return jax.jit(guarded_step, donate_argnums=(0, 1))

  def _set_controls(self) -> None:
    debug = self.config.debug
    nan_at = (debug.nan_at_step if self.record.rollbacks < debug.nan_attempts
              else -1)
    self._controls = jax.device_put({
        **health.monitor_settings(self.config.health),
        'lr_scale': jnp.float32(self.record.learning_rate_scale),
        'nan_at': jnp.int32(nan_at)}, self.replicated)

  # ---------------------------------------------------------------- loop

  def train(self) -> state_lib.GANState:
    """Trains to `config.num_train_steps`; returns the final state.

    Freed memory stays mapped for the next step meanwhile
    (`heap.reuse_freed_memory`): the step's large buffers are not mapped
    and zeroed anew each time (fp32 reference step 43.9 -> 49.0 img/s).
    """
    config = self.config
    logging.info('Training from step %d to %d in %s', self.step,
                 config.num_train_steps, self.workdir)
    with _StopOnSignal() as stop, heap.reuse_freed_memory():
      if self.step == 0:
        self._save_samples()
      while self.step < config.num_train_steps:
        metrics = self._train_one_step()
        step = self.step
        last = step == config.num_train_steps
        log = step % config.log_every_steps == 0 or last
        sample = step % config.sample_every_steps == 0 or last
        save = step % config.checkpoint_every_steps == 0 or last
        if log:
          self._log(metrics)
        # Points where the loop waits for the device anyway: check there.
        if (log or sample or save or stop.requested) and not (
            self._check_health(before_save=save or stop.requested)):
          if stop.requested:  # rolled back: its checkpoint is on disk
            logging.warning('Stopped by %s after rolling back to step %d; '
                            'the same command resumes.', stop.requested,
                            self.step)
            self.writer.write_event(self.step, 'stopped',
                                    signal=stop.requested)
            break
          continue
        if sample or stop.requested:
          self._save_samples()
        if config.eval_every_steps and (
            step % config.eval_every_steps == 0 or last):
          self._evaluate()
        if save or stop.requested:
          self._save(final=last or stop.requested is not None)
        if stop.requested:
          logging.warning('Stopped by %s at step %d; the same command '
                          'resumes.', stop.requested, step)
          self.writer.write_event(step, 'stopped', signal=stop.requested)
          break
    return self.state

  def _train_one_step(self) -> Metrics:
    batch = next(self.data_iterator)
    # Copied in before the step, so that it runs on this thread (`heap`).
    batch = {'image': heap.to_device(batch['image'], self.data_sharding)}
    self.state, self.monitor, metrics = self._step_fn(
        self.state, self.monitor, batch, self.train_rng, self._controls)
    self.step += 1
    self.bar.update(self.step)
    return metrics

  def _log(self, metrics: Metrics) -> None:
    metrics = jax.device_get(metrics)
    metrics['images_per_second'] = self.bar.rate(self.step)
    self.writer.write_scalars(self.step, metrics)
    logging.info('step %d: %s', self.step, ', '.join(
        f'{k}={float(v):.4g}' for k, v in sorted(metrics.items())))

  def _save_samples(self) -> None:
    save_sample_grid(self.generator, self.state, self.latents, self.workdir,
                     self.writer)

  # ---------------------------------------------------------- evaluation

  def _evaluate(self) -> None:
    """FID and KID of fixed-seed samples; keeps the best checkpoint by FID.

    The samples come from `config.eval.seed`, the same latents at every
    evaluation, so the curve shows the generator changing, not the draw.
    Evaluation reads the state and touches neither the data order nor any
    training random number: a run with it trains exactly as one without.
    """
    from dcgan.eval import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
    from dcgan.eval import inception, reference  # pylint: disable=g-import-not-at-top
    ec = self.config.eval
    if self._reference is None:
      self._extractor = inception.load_extractor(ec.inception_batch_size)
      self._reference = reference.reference_statistics(
          self.config.data, self.config.image_size, ec.num_reference,
          extractor=self._extractor)
    start = time.perf_counter()
    latents = sampling.sample_latents(
        jax.random.key(ec.seed), ec.loop_num_samples, self.config.latent_dim,
        self.config.latent_dist)
    images_ = []
    for i in range(0, ec.loop_num_samples, evaluate_lib.GENERATE_BATCH):
      images_.append(sampling.to_uint8(_generate_jit(
          self.generator, self.state.g_params, self.state.g_batch_stats,
          latents[i:i + evaluate_lib.GENERATE_BATCH])))
    scores = reference.score(
        self._reference, self._extractor(np.concatenate(images_)),
        ('fid', 'kid'), step=self.step, kid_subsets=ec.kid_subsets,
        kid_subset_size=ec.kid_subset_size)
    seconds = time.perf_counter() - start
    self.writer.write_scalars(self.step, {
        'eval/fid': scores['fid'], 'eval/kid': scores['kid'],
        'eval/kid_std_err': scores['kid_std_err'], 'eval/seconds': seconds})
    logging.info('step %d: FID %.2f, KID %.4f +- %.4f (%d samples, %.0f s)',
                 self.step, scores['fid'], scores['kid'],
                 scores['kid_std_err'], ec.loop_num_samples, seconds)
    best = self._best()
    if best is None or scores['fid'] < best['fid']:
      self._save_best(scores)

  def _best(self) -> dict[str, Any] | None:
    path = self.workdir / 'best' / BEST_FILE
    return json.loads(path.read_text()) if path.exists() else None

  def _save_best(self, scores: dict[str, Any]) -> None:
    """The state as <workdir>/best/<step>, the one checkpoint kept there."""
    if self._best_manager is None:
      self._best_manager = checkpointing.create_manager(
          self.workdir / 'best', keep=1)
      self._closing.callback(self._best_manager.close)
    try:
      checkpointing.save(self._best_manager, self.state, self.config_dict,
                         self.data_iterator, self.record.to_json())
    except checkpointing.SaveError as e:
      logging.error('%s; the best checkpoint stays as it was.', e)
      return
    best = {'step': self.step, 'fid': scores['fid'], 'kid': scores['kid'],
            'protocol': scores['protocol']}
    path = self.workdir / 'best' / BEST_FILE
    tmp = path.parent / (path.name + '.tmp')
    tmp.write_text(json.dumps(best, indent=1) + '\n')
    tmp.replace(path)
    self.writer.write_event(self.step, 'best_checkpoint', fid=scores['fid'])

  # -------------------------------------------------------------- health

  def _check_health(self, before_save: bool) -> bool:
    """Reads the monitor; warns, or rolls back and returns False."""
    hc = self.config.health
    problems = health.read_problems(jax.device_get(self.monitor), hc)
    if before_save and not problems and not bool(
        _state_is_finite(self.state)):
      problems.append(health.Problem(
          'nonfinite', self.step, 'non-finite parameters or optimizer state '
          f'at step {self.step}'))
    for problem in problems:
      if health.needs_rollback(problem, hc):
        self._roll_back(problem)
        return False
      logging.warning('%s (config.health.collapse_action = %r: going on).',
                      problem.message, hc.collapse_action)
      self.writer.write_event(self.step, problem.kind, action='warn',
                              since_step=problem.step,
                              message=problem.message)
      self.monitor = {**self.monitor, 'collapse_step': jax.device_put(
          jnp.array(-1, jnp.int32), self.replicated)}
    return True

  def _roll_back(self, problem: health.Problem) -> None:
    """Back to the last scheduled checkpoint (or the start), with a remedy.

    Only scheduled checkpoints are targets: one written off schedule (on a
    signal) would make a resumed run roll back elsewhere than a straight one.
    """
    hc, every = self.config.health, self.config.checkpoint_every_steps
    try:
      record = health.next_record(self.record, hc)
    except health.DivergedError as e:
      self.writer.write_event(self.step, 'diverged', problem=problem.kind,
                              since_step=problem.step, message=str(e))
      raise
    restored = checkpointing.restore_latest_good(
        self.manager, self.state, self.data_iterator,
        accept=lambda s: s % every == 0,
        check_state=lambda s: bool(_state_is_finite(s)))
    if restored is None:
      self.state = self._fresh_state()
      self.data_iterator.set_state(self.initial_data_position)
      restored_step, streak = 0, 0
    else:
      self.state = restored.state
      restored_step = restored.step
      streak = health.Record.from_json(restored.health).collapse_streak
      self._report_skipped(restored)
    self.record = dataclasses.replace(record, collapse_streak=streak)
    for _ in range(health.batches_to_skip(self.record, hc)):
      next(self.data_iterator)
    remedy = health.remedy_summary(self.record, hc)
    logging.warning('%s: rolled back from step %d to step %d (rollback %d of '
                    'at most %d; %s).', problem.message, self.step,
                    restored_step, self.record.rollbacks, hc.max_rollbacks,
                    ', '.join(f'{k}={v}' for k, v in remedy.items()))
    self.writer.write_event(self.step, 'rollback', problem=problem.kind,
                            since_step=problem.step, message=problem.message,
                            restored_step=restored_step, **remedy)
    self.step = restored_step
    self.monitor = self._fresh_monitor()
    self._set_controls()
    self.bar.close()
    self.bar = metric_writers.ProgressBar(self.config.num_train_steps,
                                          self.step, self.config.batch_size)

  # --------------------------------------------------------- checkpoints

  def _save(self, final: bool) -> None:
    """Saves a checkpoint; a failed save is reported and training goes on.

    A failed final save (end of training, or a stop signal) raises, so the
    run ends with an error rather than exit 0 without its checkpoint.
    """
    streak = int(jax.device_get(self.monitor['collapse_streak']))
    record = dataclasses.replace(self.record, collapse_streak=streak)
    try:
      checkpointing.save(self.manager, self.state, self.config_dict,
                         self.data_iterator, record.to_json())
    except checkpointing.SaveError as e:
      latest = self.manager.latest_step()
      self.writer.write_event(self.step, 'checkpoint_failed', error=str(e),
                              latest_checkpoint=latest)
      kept = (f'the latest checkpoint is step {latest}' if latest is not None
              else 'there is no checkpoint yet')
      if final:
        raise checkpointing.SaveError(
            f'{e}. Stopped: {kept}. Free some disk space and run the same '
            'command again to resume.') from e
      logging.error('%s; %s. Training goes on; the next checkpoint is '
                    'tried at step %d.', e, kept,
                    self.step + self.config.checkpoint_every_steps)


def train_and_evaluate(config, workdir: epath.PathLike) -> state_lib.GANState:
  """Trains until `config.num_train_steps`, resuming from `workdir`.

  Writes `<workdir>/config.json`, `checkpoints/`, `samples/step_<N>.png`,
  `metrics.jsonl` and `tensorboard/`; with `config.eval_every_steps`, FID and
  KID there too ('eval/fid', ...) and the best checkpoint by FID in `best/`
  (its scores in `best/best.json`). SIGINT or SIGTERM stops after the current
  step with a checkpoint. One process at a time per workdir (`<workdir>/lock`).

  Returns:
    The final state.

  Raises:
    validation.ConfigError: an invalid config, before anything is written.
    workdir.WorkdirBusyError: another process trains in `workdir`.
    health.DivergedError: training went wrong more than
      `config.health.max_rollbacks` times.
    checkpointing.SaveError: the final checkpoint could not be written.
    checkpointing.NoUsableCheckpointError: checkpoints exist, none restores.
    errors.RunError: `workdir` is a file, or its checkpoints hold a model of
      other shapes than `config` gives.
  """
  validation.validate_config(config)
  compile_cache.enable(config.compilation_cache_dir)
  workdir = epath.Path(workdir).resolve()  # orbax wants absolute paths
  if workdir.exists() and not workdir.is_dir():
    raise errors.RunError(f'The workdir {workdir} is a file: give a folder, '
                          "new or a run's, to train in.")
  workdir.mkdir(parents=True, exist_ok=True)
  with workdir_lib.lock(workdir):
    run = _Run(config, workdir)
    try:
      return run.train()
    finally:
      run.close()
