"""Latents and generated images: loading G, truncation, walks, arithmetic.

Typical use:

  generator, variables, config, step = sampling.load_generator('runs/a1')
  pixels = sampling.sample_images(generator, variables, config, 16, seed=0,
                                  truncation=0.7)  # uint8 (16, 48, 48, 3)

Truncation is defined the same way for both priors: each coordinate of z is
drawn from the prior conditioned on |z_i| <= truncation. For U(-1, 1) that is
U(-t, t), i.e. z scaled toward 0 by t (resampling the out-of-range values
gives the same distribution); for N(0, 1) it is the truncation trick of
BigGAN (Brock et al., 2019): a normal truncated at +-t. It is applied as the
quantile map of the truncated prior (`truncate`), so one seed's images
change smoothly with t. Smaller t trades variety for typical, cleaner faces;
t >= 1 leaves U(-1, 1) latents as they are, and N(0, 1) needs t of about 2
or less to make a visible difference.
"""

import functools
import math
import numbers
from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dcgan import heap

LATENT_DISTS = ('uniform', 'normal')
INTERPOLATIONS = ('slerp', 'lerp')

# fold_in tags that keep the streams of random numbers apart.
FIXED_LATENTS_TAG = 1

# Images -> {attribute name: int array (B,)}, e.g. an attribute classifier.
Classify = Callable[[np.ndarray], Mapping[str, np.ndarray]]


# Latents.


def sample_latents(rng: jax.Array, num: int, latent_dim: int,
                   dist: str = 'uniform',
                   truncation: float | None = None) -> jnp.ndarray:
  """Latents (num, latent_dim): U(-1, 1) (the tutorial's) or N(0, 1).

  Args:
    rng: a key.
    num: how many latents.
    latent_dim: their size.
    dist: 'uniform' or 'normal' (`config.latent_dist`).
    truncation: None for the prior itself (what training draws), or t > 0
      for the prior conditioned on |z_i| <= t (see the module doc).
  """
  if not (isinstance(num, numbers.Integral) and num >= 1):
    raise ValueError(f'num must be an integer >= 1, got {num!r}')
  if dist == 'uniform':
    latents = jax.random.uniform(rng, (num, latent_dim), jnp.float32, -1.0,
                                 1.0)
  elif dist == 'normal':
    latents = jax.random.normal(rng, (num, latent_dim), jnp.float32)
  else:
    raise ValueError(f'latent_dist must be one of {LATENT_DISTS}, got {dist!r}')
  return truncate(latents, truncation, dist)


def truncate(latents: jnp.ndarray, truncation: float | None,
             dist: str = 'uniform') -> jnp.ndarray:
  """Maps prior samples to samples of the prior truncated at +-`truncation`.

  The map is the truncated prior's quantile function applied to the prior's
  CDF, coordinate by coordinate: monotonic, the identity for None, and a
  sample of the prior comes out a sample of the truncated prior.

  Args:
    latents: (..., latent_dim) drawn from `dist`.
    truncation: None (no change) or t > 0.
    dist: 'uniform' (z -> t z for t < 1) or 'normal'
      (z -> sqrt(2) erfinv(erf(t / sqrt(2)) erf(z / sqrt(2)))).

  Returns:
    Latents of the same shape, within [-t, t].
  """
  if dist not in LATENT_DISTS:
    raise ValueError(f'latent_dist must be one of {LATENT_DISTS}, got {dist!r}')
  if truncation is None:
    return latents
  if not truncation > 0:
    raise ValueError(f'truncation must be > 0 (or None for none), got '
                     f'{truncation!r}')
  latents = jnp.asarray(latents, jnp.float32)
  if dist == 'uniform':
    return latents * min(float(truncation), 1.0)
  sqrt2 = math.sqrt(2.0)
  mass = math.erf(float(truncation) / sqrt2)
  return jnp.clip(sqrt2 * jax.scipy.special.erfinv(
      mass * jax.scipy.special.erf(latents / sqrt2)), -truncation, truncation)


def latents_for_seeds(seeds: Sequence[int], latent_dim: int,
                      dist: str = 'uniform',
                      truncation: float | None = None) -> jnp.ndarray:
  """One latent per seed (len(seeds), latent_dim): seed s is the first of
  `sample_latents(jax.random.key(s), ...)`, so a seed names one face."""
  if not len(seeds):
    raise ValueError('seeds is empty: give at least one seed.')
  return jnp.concatenate([
      sample_latents(jax.random.key(int(seed)), 1, latent_dim, dist,
                     truncation) for seed in seeds])


def fixed_latents(config) -> jnp.ndarray:
  """The latents of the progress grids: the same for every step of a run."""
  rng = jax.random.fold_in(jax.random.key(config.seed), FIXED_LATENTS_TAG)
  return sample_latents(rng, config.num_sample_images, config.latent_dim,
                        config.latent_dist)


# Generating.


# Latents per pass of G in `generate`: small enough that a layer's float32
# column matrix (0.9 MB a sample for the 12x12 -> 24x24 layer at 48x48) is
# still in the CPU's cache when col2im reads it back.
GENERATE_CHUNK = 32


def generate(generator, g_params, g_batch_stats, latents: jnp.ndarray,
             chunk_size: int | None = GENERATE_CHUNK) -> jnp.ndarray:
  """Eval-mode G (BatchNorm running averages): images (B, H, W, 3) in [-1, 1].

  A batch larger than `chunk_size` runs as equal chunks of at most that many
  latents, one after another (`lax.map`; the last is padded); None runs it
  whole. Eval-mode G treats every latent on its own, so the images are the
  same either way up to float rounding (a GEMM may sum in another order for
  another row count: last bits of float32, at most one pixel level after
  `to_uint8` in bfloat16). On 2 CPU cores, 500 latents at 48x48 ran ~1.05x
  (float32) and ~1.07x (bfloat16) faster in chunks of 20-50 than whole, as
  the column matrices stay in cache.
  """
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f'chunk_size must be >= 1 or None, got {chunk_size}')
  variables = {'params': g_params, 'batch_stats': g_batch_stats}
  num = latents.shape[0]
  if chunk_size is None or num <= chunk_size:
    return generator.apply(variables, latents, train=False)
  chunks = -(-num // chunk_size)
  size = -(-num // chunks)  # as even as the chunks can be
  padded = jnp.pad(latents, ((0, chunks * size - num), (0, 0)))
  images = jax.lax.map(
      lambda z: generator.apply(variables, z, train=False),
      padded.reshape(chunks, size, latents.shape[1]))
  return images.reshape(chunks * size, *images.shape[2:])[:num]


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats (B, H, W, 3) to uint8 pixels."""
  images = np.asarray(images, np.float32)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


@functools.partial(jax.jit, static_argnums=0)
def _apply_eval(module, variables, inputs):
  return module.apply(variables, inputs, train=False)


@functools.partial(jax.jit, static_argnums=0)
def _generate_eval(generator, variables, latents):
  return generate(generator, variables['params'], variables['batch_stats'],
                  latents)


def _padded_size(num: int, batch_size: int) -> int:
  """The next power of two (at least 8, at most batch_size): few compiles."""
  return min(batch_size, max(8, 1 << (num - 1).bit_length()))


def apply_in_batches(module, variables, inputs, batch_size: int = 256,
                     apply: Callable = _apply_eval) -> np.ndarray:
  """Eval-mode `module` on (N, ...) inputs, `batch_size` at a time.

  Batches are padded to a power of two so that a notebook's many batch sizes
  compile only a few times; eval-mode outputs do not depend on the batch.
  Freed memory is kept for the next batch meanwhile (`heap`). `apply(module,
  variables, batch)` computes one batch (default: `module.apply` with
  train=False, jitted).
  """
  inputs = np.asarray(inputs)
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  outputs = []
  with heap.reuse_freed_memory():
    for start in range(0, len(inputs), batch_size):
      chunk = inputs[start:start + batch_size]
      size = _padded_size(len(chunk), batch_size)
      padded = np.concatenate(
          [chunk, np.zeros((size - len(chunk),) + chunk.shape[1:],
                           chunk.dtype)])
      # Copied in first, so that the batch runs on this thread (`heap`).
      outputs.append(np.asarray(
          apply(module, variables, heap.to_device(padded)))[:len(chunk)])
  return np.concatenate(outputs)


def generate_images(generator, variables, latents, batch_size: int = 256
                    ) -> np.ndarray:
  """uint8 images (B, H, W, 3) of latents (B, latent_dim), eval-mode G."""
  latents = np.asarray(latents, np.float32)
  latent_dim = variables['params']['project']['kernel'].shape[0]
  if latents.ndim != 2 or latents.shape[1] != latent_dim or not len(latents):
    raise ValueError(f'latents must be (B >= 1, {latent_dim}) for this '
                     f'generator, got {latents.shape}')
  return to_uint8(apply_in_batches(generator, variables, latents, batch_size,
                                   apply=_generate_eval))


def sample_images(generator, variables, config, num: int, seed: int = 0,
                  truncation: float | None = None,
                  batch_size: int = 256) -> np.ndarray:
  """uint8 images (num, H, W, 3) from the latents of `seed`.

  The same seed gives the same images as `experiments.sample --seed`.
  """
  latents = sample_latents(jax.random.key(seed), num, config.latent_dim,
                           config.latent_dist, truncation)
  return generate_images(generator, variables, latents, batch_size)


# Interpolation: the DCGAN paper's walks in latent space.


def lerp(start: jnp.ndarray, end: jnp.ndarray, t) -> jnp.ndarray:
  """Straight line from start (t = 0) to end (t = 1)."""
  return (1.0 - t) * start + t * end


def slerp(start: jnp.ndarray, end: jnp.ndarray, t) -> jnp.ndarray:
  """Great-circle interpolation (White, 2016) over the last axis.

  The norm moves smoothly from |start| to |end| instead of dipping toward 0 in
  the middle as with `lerp`: high-dimensional latents of the prior all have
  about the same norm, and G has rarely seen short ones. Falls back to `lerp`
  for (nearly) parallel latents. Slerp between two U(-1, 1) latents may step
  slightly outside [-1, 1]; G takes any values.

  Args:
    start, end: (..., latent_dim).
    t: a scalar or an array broadcasting against (..., 1).
  """
  start, end = jnp.asarray(start, jnp.float32), jnp.asarray(end, jnp.float32)
  t = jnp.asarray(t, jnp.float32)
  unit_start = start / jnp.linalg.norm(start, axis=-1, keepdims=True)
  unit_end = end / jnp.linalg.norm(end, axis=-1, keepdims=True)
  cos = jnp.clip(jnp.sum(unit_start * unit_end, axis=-1, keepdims=True),
                 -1.0, 1.0)
  omega = jnp.arccos(cos)
  sin = jnp.sin(omega)
  parallel = sin < 1e-4
  safe_sin = jnp.where(parallel, 1.0, sin)
  spherical = (jnp.sin((1.0 - t) * omega) * start +
               jnp.sin(t * omega) * end) / safe_sin
  return jnp.where(parallel, lerp(start, end, t), spherical)


def interpolate(start, end, num_frames: int, method: str = 'slerp'
                ) -> jnp.ndarray:
  """`num_frames` latents from start to end, both included.

  Args:
    start, end: (..., latent_dim), e.g. (num_walks, latent_dim).
    num_frames: >= 2.
    method: 'slerp' or 'lerp'.

  Returns:
    (num_frames, ..., latent_dim); frame 0 is start, the last is end.
  """
  if method not in INTERPOLATIONS:
    raise ValueError(f'interpolation must be one of {INTERPOLATIONS}, got '
                     f'{method!r}')
  if num_frames < 2:
    raise ValueError(f'num_frames must be >= 2, got {num_frames}')
  start, end = jnp.asarray(start, jnp.float32), jnp.asarray(end, jnp.float32)
  if start.shape != end.shape:
    raise ValueError(f'start {start.shape} and end {end.shape} differ')
  t = jnp.linspace(0.0, 1.0, num_frames).reshape(
      (num_frames,) + (1,) * start.ndim)
  fn = slerp if method == 'slerp' else lerp
  frames = fn(start[None], end[None], t)
  # Exact endpoints, whatever the rounding of the trigonometry.
  return frames.at[0].set(start).at[-1].set(end)


# Vector arithmetic (the DCGAN paper's section 6.3).


def concept_arithmetic(a, b, c) -> jnp.ndarray:
  """mean(a) - mean(b) + mean(c): e.g. smiling woman - neutral woman + man.

  Averaging a few latents per concept (3 in the paper) is what makes the
  arithmetic work: single latents carry too much else besides the concept.

  Args:
    a, b, c: (k, latent_dim) latents showing each concept.

  Returns:
    (latent_dim,).
  """
  return latent_direction(a, b) + jnp.mean(jnp.asarray(c), axis=0)


def latent_direction(positive, negative) -> jnp.ndarray:
  """mean(positive) - mean(negative) (latent_dim,): add it to move toward
  what `positive` shows and `negative` lacks."""
  positive, negative = jnp.asarray(positive), jnp.asarray(negative)
  for name, group in (('positive', positive), ('negative', negative)):
    if group.ndim != 2 or not len(group):
      raise ValueError(f'{name} must be (k >= 1, latent_dim), got '
                       f'{group.shape}')
  return jnp.mean(positive, axis=0) - jnp.mean(negative, axis=0)


def jitter(latent, num: int, rng: jax.Array, scale: float = 0.25
           ) -> jnp.ndarray:
  """`latent` and num - 1 neighbours with U(-scale, scale) noise added.

  The paper shows the result of an arithmetic with 8 such neighbours
  (noise of +-0.25) to show that the concept holds around it.

  Returns:
    (num, latent_dim); row 0 is `latent` itself.
  """
  latent = jnp.asarray(latent, jnp.float32)
  noise = jax.random.uniform(rng, (num - 1,) + latent.shape, jnp.float32,
                             -scale, scale)
  return jnp.concatenate([latent[None], latent[None] + noise])


def find_latents(generator, variables, config, classify: Classify,
                 conditions: Mapping[str, int], num: int = 3, seed: int = 0,
                 truncation: float | None = None, batch_size: int = 64,
                 max_samples: int = 4096) -> jnp.ndarray:
  """Latents whose images `classify` puts in the given classes.

  Draws batches of latents from `seed` until `num` of them generate images
  with every attribute in `conditions` equal to its value, e.g. the groups of
  `concept_arithmetic` picked by an attribute classifier.

  Args:
    generator, variables, config: from `load_generator`.
    classify: uint8 images (B, H, W, 3) -> {attribute: int array (B,)}.
    conditions: {attribute: wanted class}.
    num: how many latents.
    seed: where the search starts; the same seed finds the same latents.
    truncation: as in `sample_latents`.
    batch_size: latents classified at a time.
    max_samples: give up after this many draws.

  Returns:
    (num, latent_dim).

  Raises:
    ValueError: fewer than `num` found in `max_samples` draws, or an
      attribute `classify` does not give.
  """
  if not conditions:
    raise ValueError('conditions is empty: name at least one attribute.')
  rng = jax.random.key(seed)
  found, drawn = [], 0
  while drawn < max_samples and sum(map(len, found)) < num:
    latents = sample_latents(jax.random.fold_in(rng, drawn), batch_size,
                             config.latent_dim, config.latent_dist,
                             truncation)
    labels = classify(generate_images(generator, variables, latents))
    keep = np.ones(batch_size, bool)
    for name, value in conditions.items():
      if name not in labels:
        raise ValueError(f'classify gives no attribute {name!r}; it gives '
                         f'{sorted(labels)}')
      keep &= np.asarray(labels[name]).reshape(-1) == value
    found.append(np.asarray(latents)[keep])
    drawn += batch_size
  found = np.concatenate(found)
  if len(found) < num:
    raise ValueError(
        f'Only {len(found)} of {drawn} generated images have {dict(conditions)}'
        f' (wanted {num}): raise max_samples or pick a commoner class.')
  return jnp.asarray(found[:num])


# Loading trained networks.


class Loaded(NamedTuple):
  """A network ready for `module.apply(variables, x, train=False)`."""
  module: object  # models.Generator or models.Discriminator
  variables: dict  # {'params': ..., 'batch_stats': ...}
  config: object  # the run's ConfigDict, as saved with the checkpoint
  step: int


def find_checkpoints(path, step: int | None = None):
  """Resolves a workdir, its checkpoints/ or one checkpoint folder.

  Args:
    path: a training workdir (with checkpoints/), a checkpoints/ folder, or a
      step's folder in it (checkpoints/<step>).
    step: the step wanted; None for the folder's own step or the latest.

  Returns:
    (checkpoints folder, step or None for the latest).

  Raises:
    FileNotFoundError: nothing of the above at `path`, or `path` is one
      step's folder and `step` names another.
  """
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = epath.Path(path)
  if (path / 'checkpoints').is_dir():
    return path / 'checkpoints', step
  if path.name.isdigit() and (path / 'state').is_dir():
    if step is not None and step != int(path.name):
      raise FileNotFoundError(
          f'{path} is the checkpoint of step {path.name}, but step {step} was '
          f'asked for: give the checkpoints/ folder ({path.parent}) to '
          f'choose a step.')
    return path.parent, int(path.name)
  if path.is_dir() and any(p.name.isdigit() and (p / 'state').is_dir()
                           for p in path.iterdir()):
    return path, step
  if (path / 'config.json').exists():
    raise FileNotFoundError(
        f'No checkpoint in {path / "checkpoints"}: train first with '
        f'`python -m experiments.avatar --workdir {path}`.')
  raise FileNotFoundError(
      f'{path} is not a training workdir (no config.json, no checkpoints/) '
      'nor a checkpoint folder: give the --workdir of '
      '`python -m experiments.avatar`, its checkpoints/ or checkpoints/<step>.')


def _load(path, step: int | None, network: str) -> Loaded:
  # Imported here so that `sampling` itself stays free of orbax.
  import ml_collections  # pylint: disable=g-import-not-at-top
  from dcgan import checkpointing, models  # pylint: disable=g-import-not-at-top

  directory, step = find_checkpoints(path, step)
  modules = {}

  def make_abstract(config_dict):
    config = ml_collections.ConfigDict(config_dict)
    generator, discriminator = models.create_models(config.model,
                                                    config.image_size)
    if network == 'g':
      module, x = generator, jnp.zeros((1, config.latent_dim))
    else:
      size = config.image_size
      module, x = discriminator, jnp.zeros((1, size, size, 3))
    modules.update(module=module, config=config)
    abstract = jax.eval_shape(
        lambda: module.init(jax.random.key(0), x, train=False))
    return {f'{network}_params': abstract['params'],
            f'{network}_batch_stats': abstract['batch_stats']}

  restored, _, step = checkpointing.restore_variables(directory, make_abstract,
                                                      step)
  variables = {'params': restored[f'{network}_params'],
               'batch_stats': restored[f'{network}_batch_stats']}
  return Loaded(modules['module'], variables, modules['config'], step)


def load_generator(path, step: int | None = None) -> Loaded:
  """Loads G from a checkpoint: no dataset, no optimizer state.

  Args:
    path: a folder written by `experiments.avatar` (its --workdir), its
      checkpoints/ folder, or one checkpoint (checkpoints/<step>).
    step: the checkpoint step; the latest (or that of `path`) if None.

  Returns:
    (generator, variables, config, step), a `Loaded` tuple: the module,
    {'params', 'batch_stats'} for `generator.apply(..., train=False)`, the
    config saved with the checkpoint (a ConfigDict) and the step read.
  """
  return _load(path, step, 'g')


def load_discriminator(path, step: int | None = None) -> Loaded:
  """Loads D like `load_generator` loads G: (discriminator, variables,
  config, step); `discriminator.apply(variables, images, train=False)`."""
  return _load(path, step, 'd')
