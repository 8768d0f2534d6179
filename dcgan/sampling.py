"""Latents and generated images."""

import jax
import jax.numpy as jnp
import numpy as np

LATENT_DISTS = ('uniform', 'normal')

# fold_in tags that keep the streams of random numbers apart.
FIXED_LATENTS_TAG = 1


def sample_latents(rng: jax.Array, num: int, latent_dim: int,
                   dist: str = 'uniform') -> jnp.ndarray:
  """Latents (num, latent_dim): U(-1, 1) (the tutorial's) or N(0, 1)."""
  if dist == 'uniform':
    return jax.random.uniform(rng, (num, latent_dim), jnp.float32, -1.0, 1.0)
  if dist == 'normal':
    return jax.random.normal(rng, (num, latent_dim), jnp.float32)
  raise ValueError(f'latent_dist must be one of {LATENT_DISTS}, got {dist!r}')


def fixed_latents(config) -> jnp.ndarray:
  """The latents of the progress grids: the same for every step of a run."""
  rng = jax.random.fold_in(jax.random.key(config.seed), FIXED_LATENTS_TAG)
  return sample_latents(rng, config.num_sample_images, config.latent_dim,
                        config.latent_dist)


def generate(generator, g_params, g_batch_stats, latents: jnp.ndarray
             ) -> jnp.ndarray:
  """Eval-mode G (BatchNorm running averages): images (B, H, W, 3) in [-1, 1]."""
  return generator.apply({'params': g_params, 'batch_stats': g_batch_stats},
                         latents, train=False)


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats (B, H, W, 3) to uint8 pixels."""
  images = np.asarray(images, np.float32)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def load_generator(workdir, step: int | None = None):
  """Loads G from a run's workdir: no dataset, no optimizer state.

  Args:
    workdir: a folder written by `experiments.avatar` (config.json and
      checkpoints/).
    step: the checkpoint step; the latest if None.

  Returns:
    (generator, variables, config, step): the module, {'params',
    'batch_stats'} for `generator.apply(..., train=False)`, the run's config
    (a ConfigDict) and the step read.
  """
  # Imported here so that `sampling` itself stays free of orbax and models.
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from dcgan import checkpointing, models  # pylint: disable=g-import-not-at-top

  workdir = epath.Path(workdir)
  config_path = workdir / 'config.json'
  if not config_path.exists():
    raise FileNotFoundError(
        f'{config_path} not found: is {workdir} a training workdir?')
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  generator, _ = models.create_models(config.model, config.image_size)
  abstract = jax.eval_shape(lambda: generator.init(
      jax.random.key(0), jnp.zeros((1, config.latent_dim)), train=False))
  variables, step = checkpointing.restore_generator_variables(
      workdir / 'checkpoints',
      {'g_params': abstract['params'],
       'g_batch_stats': abstract['batch_stats']}, step)
  return generator, {'params': variables['g_params'],
                     'batch_stats': variables['g_batch_stats']}, config, step
