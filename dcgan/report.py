"""A run's report: progress pictures, loss curves, walks, memorization check.

`write_report(workdir)` writes `<workdir>/report/index.md` and its pictures.
The memorization check shows, for generated images, their nearest training
images in several feature spaces (an `Embed`: uint8 images -> features):
pixels, the trained D's penultimate layer and, on request and with the
`eval` extra, Inception's pool3. A G that copies its training set shows
near-duplicates there, and generated images sit closer to the training set
than unseen real images do (the distance table of the report).
"""

import functools
import logging
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import linen as nn

from dcgan import images, plots, sampling

# uint8 images (B, H, W, 3) -> float features (B, F).
Embed = Callable[[np.ndarray], np.ndarray]
EMBEDDINGS = ('pixel', 'discriminator', 'inception')
# Inception is left out by default: a 2-core CPU computes the features of
# about 3 images a second, half an hour for 5,000 training images.
DEFAULT_EMBEDDINGS = ('pixel', 'discriminator')


# Training images.


def load_training_images(data_config: ml_collections.ConfigDict,
                         image_size: int, num: int, seed: int = 0,
                         num_held_out: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
  """A random subset of a run's training images, as training sees them.

  Each image goes through `pipeline.to_model_image` (the resize of the
  training pipeline) and back to uint8.

  Args:
    data_config: the run's `config.data`.
    image_size: the run's `config.image_size`.
    num: how many (fewer if the set is smaller).
    seed: which subset.
    num_held_out: how many more, disjoint from the first ones: stand-ins for
      unseen real images. Reduced to a quarter of a small set.

  Returns:
    (images uint8 (num, S, S, 3), held_out uint8 (num_held_out, S, S, 3)).
  """
  from dcgan.data import pipeline  # pylint: disable=g-import-not-at-top
  source = pipeline.load_data_source(data_config)
  size = len(source)
  num_held_out = min(num_held_out, size // 4)
  num = min(num, size - num_held_out)
  order = np.random.default_rng(seed).permutation(size)

  def read(indices) -> np.ndarray:
    if not len(indices):
      return np.zeros((0, image_size, image_size, 3), np.uint8)
    examples = source.__getitems__(sorted(int(i) for i in indices))
    return np.stack([
        sampling.to_uint8(pipeline.to_model_image(e['image'], image_size))
        for e in examples])

  return read(order[:num]), read(order[num:num + num_held_out])


# Feature spaces.


def pixel_embedding(images_: np.ndarray) -> np.ndarray:
  """Pixels in [-1, 1], flattened: (B, H*W*3)."""
  images_ = np.asarray(images_, np.float32)
  return (images_ / 127.5 - 1.0).reshape(len(images_), -1)


def discriminator_embedding(discriminator, variables,
                            batch_size: int = 256) -> Embed:
  """D's penultimate features (the input of its logit), unit length.

  What the trained D looks at: nearer to shape and colour layout than
  pixels are, and free of the pixel distance's bias toward flat images.
  Unit length makes the distance a cosine one, free of the features' scale.

  Args:
    discriminator, variables: from `sampling.load_discriminator`.
    batch_size: images per D call.
  """
  def embed(images_: np.ndarray) -> np.ndarray:
    pixels = pixel_embedding(images_).reshape(np.shape(images_))
    features = np.concatenate([
        np.asarray(_penultimate(discriminator, variables,
                                pixels[i:i + batch_size]))
        for i in range(0, len(pixels), batch_size)])
    return features / np.maximum(
        np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
  return embed


@functools.partial(jax.jit, static_argnums=0)
def _penultimate(discriminator, variables, images_):
  captured = {}

  def interceptor(next_fun, args, kwargs, context):
    if context.module.name == 'logit' and context.method_name == '__call__':
      captured['features'] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    discriminator.apply(variables, images_, train=False)
  return jnp.asarray(captured['features'], jnp.float32)


def inception_embedding() -> Embed | None:
  """Inception pool3 features (B, 2048), or None without the `eval` extra
  (pip install -e '.[eval]')."""
  try:
    from dcgan.eval import inception  # pylint: disable=g-import-not-at-top
    inception.load_extractor()  # fails here, not mid-report, without torch
  except ImportError as error:
    logging.warning('No Inception nearest neighbours: %s', error)
    return None
  return inception.pool3_features


# Nearest neighbours.


def nearest_neighbors(queries: np.ndarray, references: np.ndarray,
                      k: int = 5, chunk: int = 256
                      ) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest references of each query, by Euclidean distance.

  Args:
    queries: float (Q, F).
    references: float (N, F).
    k: neighbours per query (at most N).
    chunk: queries per matrix product, to bound memory (chunk x N floats).

  Returns:
    (indices int (Q, k), distances float (Q, k)), nearest first.
  """
  queries = np.asarray(queries, np.float32)
  references = np.asarray(references, np.float32)
  if queries.ndim != 2 or references.ndim != 2 or (
      queries.shape[1] != references.shape[1]):
    raise ValueError(f'need queries (Q, F) and references (N, F), got '
                     f'{queries.shape} and {references.shape}')
  k = min(k, len(references))
  ref_sq = np.sum(np.square(references), axis=1)
  indices, distances = [], []
  for start in range(0, len(queries), chunk):
    q = queries[start:start + chunk]
    sq = np.maximum(np.sum(np.square(q), axis=1, keepdims=True)
                    - 2.0 * q @ references.T + ref_sq, 0.0)
    top = np.argpartition(sq, k - 1, axis=1)[:, :k]
    top_sq = np.take_along_axis(sq, top, axis=1)
    order = np.argsort(top_sq, axis=1, kind='stable')
    indices.append(np.take_along_axis(top, order, axis=1))
    distances.append(np.sqrt(np.take_along_axis(top_sq, order, axis=1)))
  return np.concatenate(indices), np.concatenate(distances)


def memorization_check(generated: np.ndarray, train: np.ndarray,
                       held_out: np.ndarray, embed: Embed, k: int = 5
                       ) -> dict[str, np.ndarray]:
  """Nearest training images of generated ones, and of unseen real ones.

  Args:
    generated: uint8 (G, H, W, 3).
    train: uint8 (N, H, W, 3), the training images searched.
    held_out: uint8 (M, H, W, 3), real images not among `train`.
    embed: the feature space.
    k: neighbours per image.

  Returns:
    {'indices': (G, k) into `train`, 'distances': (G, k),
     'held_out_distances': (M,) each held-out image's nearest distance}.
    Generated images much nearer the training set than held-out ones are
    suspects for copies.
  """
  train_features = embed(train)
  indices, distances = nearest_neighbors(embed(generated), train_features, k)
  held = (nearest_neighbors(embed(held_out), train_features, 1)[1][:, 0]
          if len(held_out) else np.zeros((0,), np.float32))
  return {'indices': indices, 'distances': distances,
          'held_out_distances': held}


# The report.


def write_report(workdir: epath.PathLike, out: epath.PathLike | None = None,
                 step: int | None = None, seed: int = 0,
                 num_train_images: int = 5000, num_queries: int = 8,
                 num_neighbors: int = 5, num_stats: int = 256,
                 embeddings: Sequence[str] = DEFAULT_EMBEDDINGS,
                 num_progress: int = 6) -> epath.Path:
  """Writes `<out>/index.md` (default out: <workdir>/report) and pictures.

  progress.png (the fixed-latent grids of about `num_progress` steps),
  progress.gif (all of them), losses.png (from metrics.jsonl),
  latent_walk.png (slerp walks between random latents) and, when the run's
  training images can be read, neighbors_<embedding>.png with a distance
  table (the memorization check).

  Args:
    workdir: a training workdir.
    out: the report folder.
    step: the checkpoint used for new images; the latest if None.
    seed: the seed of the new images and of the training subset.
    num_train_images: training images searched for neighbours (0: no
      memorization check).
    num_queries: generated images shown with their neighbours.
    num_neighbors: neighbours shown per generated image.
    num_stats: generated and held-out real images in the distance table.
    embeddings: feature spaces among `EMBEDDINGS`; unavailable ones are
      skipped with a note. 'inception' needs the `eval` extra and takes
      about 0.3 s per image on a 2-core CPU.
    num_progress: grids in progress.png.

  Returns:
    The path of index.md.
  """
  unknown = sorted(set(embeddings) - set(EMBEDDINGS))
  if unknown:
    raise ValueError(f'Unknown embeddings {unknown}: choose from {EMBEDDINGS}')
  workdir = epath.Path(workdir)
  out = epath.Path(out) if out is not None else workdir / 'report'
  out.mkdir(parents=True, exist_ok=True)
  generator = sampling.load_generator(workdir, step)
  config = generator.config
  lines = [f'# Report of {workdir.name}', '',
           f'Checkpoint step {generator.step}; {_describe(config)}.', '']

  # Progress across training.
  grids = plots.sample_grids(workdir)
  images.save_png(plots.progress_strip(workdir, num_progress),
                  out / 'progress.png')
  images.save_gif(plots.progress_frames(workdir), out / 'progress.gif',
                  frame_ms=500, last_frame_ms=2000)
  lines += ['## Progress', '',
            f'The fixed-latent grid at {len(grids)} steps ({grids[0][0]} to '
            f'{grids[-1][0]}); all of them in [progress.gif](progress.gif).',
            '', '![progress](progress.png)', '']

  # Loss curves.
  lines += ['## Losses', '']
  try:
    metrics = plots.read_metrics(workdir / 'metrics.jsonl')
  except (FileNotFoundError, ValueError) as error:
    lines += [f'No loss curves: {error}', '']
  else:
    plots.plot_losses(metrics, out / 'losses.png', title=workdir.name)
    last = {k: float(v[-1]) for k, v in metrics.items()}
    lines += ['![losses](losses.png)', '',
              f'At step {int(last["step"])}: D loss {last["d_loss"]:.3f}, '
              f'G loss {last["g_loss"]:.3f}, D(x) {last["d_real"]:.3f}, '
              f'D(G(z)) {last["d_fake"]:.3f}.', '']

  # Walks in latent space.
  num_walks, num_frames = 8, 10
  rng = jax.random.key(seed)
  ends = sampling.sample_latents(rng, 2 * num_walks, config.latent_dim,
                                 config.latent_dist)
  path = sampling.interpolate(ends[:num_walks], ends[num_walks:], num_frames)
  pixels = sampling.generate_images(
      generator.module, generator.variables,
      path.reshape(-1, config.latent_dim))
  images.save_png(plots.walk_figure(pixels.reshape(
      (num_frames, num_walks) + pixels.shape[1:])), out / 'latent_walk.png')
  lines += ['## Latent walks', '',
            f'{num_walks} spherical interpolations between random latents '
            f'(seed {seed}), one per row: smooth changes mean G has learned '
            'a continuous face space rather than a lookup of memorized '
            'images.', '', '![latent walks](latent_walk.png)', '']

  # Memorization check.
  lines += ['## Nearest training images', '']
  if num_train_images > 0:
    lines += _memorization_section(
        workdir, out, generator, seed=seed, num_train_images=num_train_images,
        num_queries=num_queries, num_neighbors=num_neighbors,
        num_stats=num_stats, embeddings=embeddings)
  else:
    lines += ['Skipped (num_train_images = 0).', '']

  index = out / 'index.md'
  index.write_text('\n'.join(lines))
  logging.info('Wrote the report of %s to %s', workdir, index)
  return index


def _describe(config) -> str:
  data = config.data
  source = (f'{data.num_examples:,} built-in avatars' if
            data.source == 'procedural' else f'images from {data.path}')
  return (f'{config.image_size}x{config.image_size} images, {source}, '
          f'batch {config.batch_size}, z ~ {config.latent_dist} '
          f'{config.latent_dim}-d, {config.num_train_steps:,} steps planned')


def _memorization_section(workdir, out, generator, *, seed, num_train_images,
                          num_queries, num_neighbors, num_stats, embeddings
                          ) -> list[str]:
  config = generator.config
  try:
    train, held_out = load_training_images(
        config.data, config.image_size, num_train_images, seed=seed,
        num_held_out=num_stats)
  except (FileNotFoundError, ValueError) as error:
    logging.warning('No memorization check: %s', error)
    return [f'Skipped: the training images could not be read ({error}).', '']
  generated = sampling.sample_images(
      generator.module, generator.variables, config,
      max(num_stats, num_queries), seed=seed + 1)
  lines = [f'Each generated image (left) and its {num_neighbors} nearest among '
           f'{len(train):,} random training images. Near-duplicates would '
           'mean G copies its training set. The table compares the distance '
           f'of {len(generated)} generated images to their nearest training '
           f'image with that of {len(held_out)} real images outside the '
           'searched subset: generated images much nearer than real ones '
           'are suspects.', '',
           '| feature space | median distance, generated | median distance, '
           'held-out real | ratio |', '| --- | --- | --- | --- |']
  pictures = []
  for name in embeddings:
    embed = _embedding(name, workdir, generator.step)
    if embed is None:
      lines.append(f'| {name} | not available | | |')
      continue
    check = memorization_check(generated, train, held_out, embed,
                               num_neighbors)
    figure = plots.neighbors_figure(
        generated[:num_queries], train[check['indices'][:num_queries]],
        caption=f'{name}: generated | nearest training')
    images.save_png(figure, out / f'neighbors_{name}.png')
    gen_median = float(np.median(check['distances'][:, 0]))
    if len(check['held_out_distances']):
      real_median = float(np.median(check['held_out_distances']))
      lines.append(f'| {name} | {gen_median:.4g} | {real_median:.4g} | '
                   f'{gen_median / max(real_median, 1e-12):.2f} |')
    else:
      lines.append(f'| {name} | {gen_median:.4g} | (too few images) | |')
    pictures += [f'![{name} neighbours](neighbors_{name}.png)', '']
  return lines + [''] + pictures


def _embedding(name: str, workdir, step: int) -> Embed | None:
  if name == 'pixel':
    return pixel_embedding
  if name == 'discriminator':
    discriminator = sampling.load_discriminator(workdir, step)
    return discriminator_embedding(discriminator.module,
                                   discriminator.variables)
  return inception_embedding()
