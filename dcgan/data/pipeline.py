"""The training input pipeline: a cached TFDS build read by grain.

`create_train_iterator` yields global batches {'image': float32 (B, S, S, 3)}
in [-1, 1] forever: every epoch is a fresh shuffle of the whole set (derived
from the seed and the epoch number), split into batches with the remainder
dropped, like the tutorial's `len(data) // batch_size` batches per epoch.
Images are resized from the stored size to S with PIL bilinear (what the
tutorial's `scipy.misc.imresize` did) and scaled by x / 127.5 - 1.

The iterator's state (`get_state()`, a small dict) restores it exactly, and it
saves with orbax through `grain.checkpoint.CheckpointSave` /
`CheckpointRestore`.
"""

import io
import os
from typing import Any

import grain
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from dcgan import errors
from dcgan.data import builders

SOURCES = ('procedural', 'folder')
MIN_SOURCE_SIZE, MAX_SOURCE_SIZE = 16, 512


def get_default_data_config() -> ml_collections.ConfigDict:
  """Defaults of `config.data`."""
  config = ml_collections.ConfigDict()
  config.source = 'procedural'  # or 'folder': a folder or .zip of images
  config.path = ''  # the folder or .zip when source == 'folder'
  config.num_examples = 50_000  # procedural only
  config.dataset_seed = 0  # procedural only: which avatars are drawn
  config.source_size = 96  # stored square size, as the tutorial's faces
  config.cache_dir = ''  # '' -> $DCGAN_DATA_DIR or ~/.cache/dcgan/datasets
  # Threads that read and resize batches. Two per core keeps the pipeline
  # well ahead of a CPU training step while leaving it most of the CPU.
  config.num_threads = 4
  config.prefetch = 8  # batches ready in advance
  return config


def _fail(key: str, value: Any, allowed: str) -> None:
  raise errors.ConfigError(
      f'config.data.{key} = {value!r} is invalid: {allowed}.')


def _check_int(config, key: str, low: int, high: int | None = None) -> None:
  value = config[key]
  if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or
      value < low or (high is not None and value > high)):
    upper = f' and <= {high}' if high is not None else ''
    _fail(key, value, f'must be an integer >= {low}{upper}')


def validate_data_config(data_config: ml_collections.ConfigDict) -> None:
  """Checks the types and ranges of `config.data`.

  Raises `errors.ConfigError` (a ValueError) naming the first bad key;
  whether `path` exists is checked when the data is prepared
  (FileNotFoundError naming it).
  """
  allowed_keys = set(get_default_data_config().keys())
  unknown = sorted(set(data_config.keys()) - allowed_keys)
  if unknown:
    _fail(unknown[0], data_config[unknown[0]],
          f'unknown key; the keys are {sorted(allowed_keys)}')
  missing = sorted(allowed_keys - set(data_config.keys()))
  if missing:
    raise errors.ConfigError(
        f'config.data.{missing[0]} is missing; start from '
        'dcgan.data.get_default_data_config().')
  if data_config.source not in SOURCES:
    _fail('source', data_config.source, f'must be one of {SOURCES}')
  if not isinstance(data_config.path, str):
    _fail('path', data_config.path, 'must be a string')
  if data_config.source == 'folder' and not data_config.path:
    _fail('path', data_config.path,
          "must name a folder or a .zip of images when source is 'folder'")
  if data_config.source == 'procedural' and data_config.path:
    _fail('path', data_config.path,
          "must be '' when source is 'procedural'; set config.data.source = "
          "'folder' to train on these images")
  _check_int(data_config, 'num_examples', 1)
  _check_int(data_config, 'dataset_seed', 0, 2**63 - 1)
  _check_int(data_config, 'source_size', MIN_SOURCE_SIZE, MAX_SOURCE_SIZE)
  if not isinstance(data_config.cache_dir, str):
    _fail('cache_dir', data_config.cache_dir, 'must be a string')
  _check_int(data_config, 'num_threads', 0, 256)
  _check_int(data_config, 'prefetch', 0, 4096)


def prepare(data_config: ml_collections.ConfigDict):
  """Builds the configured dataset once (cached); returns its TFDS builder."""
  validate_data_config(data_config)
  if data_config.source == 'procedural':
    return builders.prepare_procedural(
        data_config.num_examples, data_config.dataset_seed,
        image_size=data_config.source_size, cache_dir=data_config.cache_dir)
  return builders.prepare_folder(
      data_config.path, image_size=data_config.source_size,
      cache_dir=data_config.cache_dir)


def load_data_source(data_config: ml_collections.ConfigDict):
  """The prepared 'train' split as a random-access source of example dicts.

  Each example has 'image' uint8 (source_size, source_size, 3) and, for the
  procedural set, one int label per `avatars.ATTRIBUTES` key.
  """
  return prepare(data_config).as_data_source(split='train')


def describe(data_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A small summary for logs: source, size and where the cache lives.

  `fingerprint` names the build: it changes whenever the contents would.
  """
  builder = prepare(data_config)
  build_dir = os.fspath(builder.data_dir_root)
  summary = {
      'source': data_config.source,
      'path': data_config.path,
      'num_examples': builder.info.splits['train'].num_examples,
      'source_size': data_config.source_size,
      'fingerprint': os.path.basename(build_dir),
      'cache': os.fspath(builder.data_dir),
  }
  metadata = builder.info.metadata or {}
  for key in ('num_skipped', 'num_converted'):
    if key in metadata:
      summary[key] = metadata[key]
  return summary


class _ToModelImage(grain.transforms.Map):
  """Example with encoded 'image' -> {'image': float32 (S, S, 3) in [-1, 1]}."""

  def __init__(self, image_size: int):
    self.image_size = image_size

  def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    with Image.open(io.BytesIO(example['image'])) as image:
      return {'image': to_model_image(image.convert('RGB'), self.image_size)}


def to_model_image(image: Image.Image | np.ndarray,
                   image_size: int) -> np.ndarray:
  """RGB image (H, W, 3) -> float32 (image_size, image_size, 3) in [-1, 1].

  Resizes with PIL bilinear, as the tutorial's `scipy.misc.imresize`.
  """
  if isinstance(image, np.ndarray):
    image = Image.fromarray(image)
  if image.size != (image_size, image_size):
    image = image.resize((image_size, image_size), Image.BILINEAR)
  return np.asarray(image, dtype=np.float32) / 127.5 - 1.0


def create_train_dataset(data_config: ml_collections.ConfigDict, *,
                         image_size: int, batch_size: int,
                         seed: int) -> grain.IterDataset:
  """The infinite, per-epoch reshuffled, batched dataset (see module doc)."""
  _check_size('image_size', image_size)
  _check_size('batch_size', batch_size)
  # The pipeline decodes the stored bytes itself (decode and resize in one
  # PIL pass, in the reading threads).
  source = prepare(data_config).as_data_source(
      split='train', decoders={'image': tfds.decode.SkipDecoding()})
  if batch_size > len(source):
    where = (f' in {data_config.path}' if data_config.source == 'folder'
             else '')
    raise errors.ConfigError(
        f'config.batch_size = {batch_size} is larger than the dataset '
        f'({len(source)} images{where}): no full batch can be formed. Lower '
        'it (--config.batch_size) or add images.')
  dataset = (grain.MapDataset.source(source)
             .shuffle(seed=seed % 2**32)
             .map(_ToModelImage(image_size))
             # Batching before repeat keeps every batch within one epoch.
             .batch(batch_size, drop_remainder=True)
             .repeat(None))
  return dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=data_config.num_threads,
      prefetch_buffer_size=data_config.prefetch))


def create_train_iterator(data_config: ml_collections.ConfigDict, *,
                          image_size: int, batch_size: int,
                          seed: int) -> grain.DatasetIterator:
  """Iterator of {'image': float32 (batch_size, image_size, image_size, 3)}.

  Args:
    data_config: `config.data` (see `get_default_data_config`).
    image_size: side of the model's images; stored images are resized to it.
    batch_size: global batch size; each epoch drops its last partial batch.
    seed: shuffling seed; epoch e uses a shuffle derived from (seed, e).

  Returns:
    An infinite grain DatasetIterator; `get_state()` / `set_state()` resume it
    exactly, and `grain.checkpoint.CheckpointSave(it)` saves it with orbax.
  """
  return iter(create_train_dataset(data_config, image_size=image_size,
                                   batch_size=batch_size, seed=seed))


def _check_size(name: str, value: int) -> None:
  if not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f'{name} must be a positive integer, got {value!r}.')
