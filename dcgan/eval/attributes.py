"""Attribute classifiers: what a generator's samples show, for mode coverage.

A small multi-head CNN (one softmax head per attribute) is trained on a
dataset's own labels, at the generator's image size and with the training
pipeline's preprocessing (`pipeline.to_model_image`: PIL bilinear resize of
the stored image, then [-1, 1]), so that samples and real images are read
alike. Its predictions on every image of the dataset are the reference that
`coverage.coverage_report` compares samples with.

Two label sources:

* the built-in procedural avatars (`config.data.source = 'procedural'`): the
  build stores one ClassLabel per attribute of `avatars.ATTRIBUTES` beside
  each image;
* a folder or .zip of images (`source = 'folder'`) with a CSV of labels:
  a `file` column naming each image as in the source (`faces/12.jpg`; a name
  that differs by leading folders, `12.jpg`, also matches) and one column per
  attribute (e.g. `eye_color,hair_color`; an empty cell is a missing label).
  By default `labels.csv` beside the .zip, or inside or beside the folder.

`train_or_load` trains once and caches the classifier under
`<dataset cache root>/classifiers/<build>-s<image size>-<hash>/`:
`params.msgpack` (flax.serialization), `info.json` (attributes and class
names, held-out accuracies, dataset fingerprint, image size, settings) and
`reference_labels.npy` (its predictions on the whole dataset, int (M, A)).
The hash covers the settings and the labels file, so changing either trains
a new classifier.
"""

import csv
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import flax
from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image
import tensorflow_datasets as tfds

from dcgan import errors, layers, sampling
from dcgan.data import builders, pipeline
from dcgan.eval import coverage

# Bump when the model, training or preprocessing changes: cached classifiers
# are then retrained.
CLASSIFIER_VERSION = 1
MISSING = -1  # label of an image without one for an attribute
# Joint attributes of the coverage numbers: colours are what mode collapse
# loses first and what a 48x48 sample shows best. 5 * 10 * 8 = 400
# combinations for the avatars.
PROCEDURAL_SUBSET = ('skin_tone', 'hair_color', 'eye_color')
_CSV_FILE_COLUMN = 'file'
_READ_CHUNK = 1000

logger = logging.getLogger(__name__)


def get_default_classifier_config(
    source: str = 'procedural') -> ml_collections.ConfigDict:
  """Settings of the classifier and its training for a data source.

  Args:
    source: `config.data.source`. 'folder' (real faces: ~10k noisy labels)
      adds shifts and dropout against overfitting; 'procedural' (50k clean
      labels) needs neither.
  """
  if source not in pipeline.SOURCES:
    raise ValueError(f'source must be one of {pipeline.SOURCES}, got '
                     f'{source!r}.')
  config = ml_collections.ConfigDict()
  config.features = (16, 32, 64)  # per stage: conv 3x3, then conv 3x3 / 2
  config.hidden = 256  # dense layer before the heads
  config.dropout = 0.0  # before the heads
  config.num_steps = 4000
  config.batch_size = 64
  config.learning_rate = 2e-3  # peak of a warmup-cosine schedule
  config.weight_decay = 1e-4
  config.flip = True  # random horizontal flips (no attribute is one-sided)
  config.max_shift = 0  # random translations up to this many pixels
  config.holdout_fraction = 0.1  # of the labelled images, for accuracy
  config.seed = 0
  config.conv_impl = 'auto'  # dcgan.layers: matmul on CPU, XLA elsewhere
  if source == 'folder':
    config.dropout = 0.3
    config.max_shift = 3
  return config


# ------------------------------------------------------------------- data --


@dataclasses.dataclass
class LabelledImages:
  """A dataset's images at the classifier's size, with labels.

  Attributes:
    images: uint8 (N, S, S, 3), as the training pipeline resizes them.
    labels: int32 (N, A); MISSING where an image has no label.
    attributes: {attribute: class names}, in column order.
    fingerprint: names the images and labels (changes when either does).
    default_subset: attributes for the joint coverage numbers.
  """
  images: np.ndarray
  labels: np.ndarray
  attributes: dict[str, tuple[str, ...]]
  fingerprint: str
  default_subset: tuple[str, ...]


def _read_source(data_config, image_size: int, feature_keys: Sequence[str]
                 ) -> tuple[np.ndarray, dict[str, list]]:
  """All images of the prepared build at `image_size`, plus other features."""
  source = pipeline.prepare(data_config).as_data_source(
      split='train', decoders={'image': tfds.decode.SkipDecoding()})
  images = np.empty((len(source), image_size, image_size, 3), np.uint8)
  features = {key: [] for key in feature_keys}
  for start in range(0, len(source), _READ_CHUNK):
    examples = source.__getitems__(
        list(range(start, min(start + _READ_CHUNK, len(source)))))
    for i, example in enumerate(examples, start):
      with Image.open(io.BytesIO(example['image'])) as image:
        images[i] = sampling.to_uint8(
            pipeline.to_model_image(image.convert('RGB'), image_size))
      for key in feature_keys:
        features[key].append(example[key])
  return images, features


def load_procedural(data_config: ml_collections.ConfigDict,
                    image_size: int) -> LabelledImages:
  """The built-in avatars and their attribute labels (all images labelled)."""
  if data_config.source != 'procedural':
    raise ValueError(f"config.data.source is {data_config.source!r}, not "
                     "'procedural'.")
  builder = pipeline.prepare(data_config)
  names = list(builder.info.features.keys())
  attributes = {name: tuple(builder.info.features[name].names)
                for name in names if name != 'image'}
  images, features = _read_source(data_config, image_size, list(attributes))
  labels = np.stack([np.asarray(features[name], np.int32)
                     for name in attributes], axis=1)
  return LabelledImages(
      images, labels, attributes,
      fingerprint=os.path.basename(os.fspath(builder.data_dir_root)),
      default_subset=tuple(n for n in PROCEDURAL_SUBSET if n in attributes))


def find_labels_csv(path: str) -> str:
  """The default labels file of a folder or .zip of images.

  Raises:
    FileNotFoundError: none of the candidates exists; names them.
  """
  full = os.path.abspath(os.path.expanduser(path))
  candidates = []
  if os.path.isdir(full):
    candidates.append(os.path.join(full, 'labels.csv'))
  candidates.append(os.path.join(os.path.dirname(full), 'labels.csv'))
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(
      f'No labels for {path!r}: none of {candidates} exists. Pass the CSV '
      f'(columns {_CSV_FILE_COLUMN},<attribute>,...) as labels_csv.')


def read_labels_csv(path: str) -> tuple[dict[str, dict[str, str]],
                                        list[str]]:
  """({file: {attribute: value}}, attribute names) of a labels CSV.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: no `file` column, no attribute column, or a file twice.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Labels file {path!r} does not exist.')
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    columns = list(reader.fieldnames or [])
    attributes = [c for c in columns if c != _CSV_FILE_COLUMN]
    if _CSV_FILE_COLUMN not in columns or not attributes:
      raise ValueError(
          f'{path!r} has columns {columns}; it needs a {_CSV_FILE_COLUMN!r} '
          'column and at least one attribute column.')
    rows = {}
    for row in reader:
      name = row[_CSV_FILE_COLUMN].strip().replace('\\', '/')
      if name in rows:
        raise ValueError(f'{path!r} lists {name!r} twice.')
      rows[name] = {a: (row[a] or '').strip() for a in attributes}
  if not rows:
    raise ValueError(f'{path!r} has no rows.')
  return rows, attributes


def _suffixes(name: str) -> list[str]:
  """'a/b/c.jpg' -> ['a/b/c.jpg', 'b/c.jpg', 'c.jpg'] (longest first)."""
  parts = name.strip('/').split('/')
  return ['/'.join(parts[i:]) for i in range(len(parts))]


def match_names(image_names: Sequence[str], label_names: Sequence[str]
                ) -> list[str | None]:
  """For each image name, the label name it matches, or None.

  A name matches exactly or after dropping leading folders from either side
  ('faces/12.jpg' and '12.jpg'); the longest common suffix wins, and a suffix
  shared by two label names is never used alone.

  Raises:
    ValueError: two images match the same label row.
  """
  by_suffix: dict[str, str | None] = {}
  for label_name in label_names:
    for suffix in _suffixes(label_name):
      # None marks a suffix that two label names share: ambiguous.
      by_suffix[suffix] = None if suffix in by_suffix else label_name
  matches, used = [], {}
  for image_name in image_names:
    match = None
    for suffix in _suffixes(image_name):
      if by_suffix.get(suffix):
        match = by_suffix[suffix]
        break
    if match is not None:
      if match in used:
        raise ValueError(f'Images {used[match]!r} and {image_name!r} both '
                         f'match the label row {match!r}.')
      used[match] = image_name
    matches.append(match)
  return matches


def load_labelled_folder(data_config: ml_collections.ConfigDict,
                         image_size: int,
                         labels_csv: str = '') -> LabelledImages:
  """A folder or .zip of images with a labels CSV (see module doc).

  Every image of the source is returned (the reference needs them all);
  those without a CSV row have MISSING labels. Class names are the CSV's
  values, sorted.

  Raises:
    FileNotFoundError: the source or the CSV does not exist.
    ValueError: bad CSV, or no image matches a CSV row.
  """
  if data_config.source != 'folder':
    raise ValueError(f"config.data.source is {data_config.source!r}, not "
                     "'folder'.")
  csv_path = labels_csv or find_labels_csv(
      builders.check_source_path(data_config.path))
  rows, names = read_labels_csv(csv_path)
  attributes = {name: tuple(sorted({r[name] for r in rows.values()} - {''}))
                for name in names}
  for name, classes in attributes.items():
    if len(classes) < 2:
      raise ValueError(f'Column {name!r} of {csv_path!r} has {len(classes)} '
                       'distinct value(s): nothing to classify.')
  images, features = _read_source(data_config, image_size, ['name'])
  image_names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in features['name']]
  matches = match_names(image_names, list(rows))
  labels = np.full((len(images), len(attributes)), MISSING, np.int32)
  for i, match in enumerate(matches):
    if match is None:
      continue
    for a, (name, classes) in enumerate(attributes.items()):
      value = rows[match][name]
      if value:
        labels[i, a] = classes.index(value)
  num_matched = sum(m is not None for m in matches)
  if not num_matched:
    raise ValueError(
        f'No image of {data_config.path!r} (e.g. {image_names[0]!r}) matches '
        f'a file of {csv_path!r} (e.g. {next(iter(rows))!r}).')
  if num_matched < len(rows):
    logger.warning('%d of %d rows of %s name no image of %s.',
                   len(rows) - num_matched, len(rows), csv_path,
                   data_config.path)
  with open(csv_path, 'rb') as f:
    csv_hash = hashlib.blake2b(f.read(), digest_size=8).hexdigest()
  build = os.path.basename(os.fspath(pipeline.prepare(data_config)
                                     .data_dir_root))
  return LabelledImages(images, labels, attributes,
                        fingerprint=f'{build}-labels{csv_hash}',
                        default_subset=tuple(attributes))


def check_labels_csv(data_config: ml_collections.ConfigDict,
                     labels_csv: str) -> None:
  """Raises errors.ConfigError if `labels_csv` is given for built-in data."""
  if data_config.source == 'procedural' and labels_csv:
    raise errors.ConfigError(
        'labels_csv is only for folder sources; the procedural avatars carry '
        'their own labels.')


def load_labelled(data_config: ml_collections.ConfigDict, image_size: int,
                  labels_csv: str = '') -> LabelledImages:
  """`load_procedural` or `load_labelled_folder`, by `data_config.source`."""
  check_labels_csv(data_config, labels_csv)
  if data_config.source == 'procedural':
    return load_procedural(data_config, image_size)
  return load_labelled_folder(data_config, image_size, labels_csv)


# ------------------------------------------------------------------ model --


class AttributeClassifier(nn.Module):
  """Images (B, S, S, 3) -> one logits array (B, K_a) per attribute.

  Takes uint8 pixels or floats in [-1, 1] (the generator's output range).
  Each stage is a 3x3 convolution and a 3x3 stride-2 convolution, with ReLU;
  then a dense layer and one linear head per attribute. No BatchNorm, so
  `train` only switches dropout.
  """
  num_classes: tuple[int, ...]
  features: tuple[int, ...] = (16, 32, 64)
  hidden: int = 256
  dropout: float = 0.0
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, images, train: bool = False) -> tuple[jnp.ndarray, ...]:
    x = images
    if x.dtype == jnp.uint8:
      x = x.astype(jnp.float32) / 127.5 - 1.0
    for i, width in enumerate(self.features):
      for j, stride in enumerate((1, 2)):
        x = layers.Conv(width, (3, 3), strides=(stride, stride),
                        impl=self.conv_impl, name=f'conv{i}_{j}')(x)
        x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, name='hidden')(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return tuple(nn.Dense(k, name=f'head{a}')(x)
                 for a, k in enumerate(self.num_classes))


def create_model(num_classes: Sequence[int],
                 config: ml_collections.ConfigDict) -> AttributeClassifier:
  return AttributeClassifier(
      num_classes=tuple(int(k) for k in num_classes),
      features=tuple(config.features), hidden=config.hidden,
      dropout=config.dropout, conv_impl=config.conv_impl)


# --------------------------------------------------------------- training --


def _augment(images: jnp.ndarray, rng: jax.Array, flip: bool,
             max_shift: int) -> jnp.ndarray:
  """Random flips and edge-padded shifts of uint8 images (B, S, S, 3)."""
  flip_rng, shift_rng = jax.random.split(rng)
  if flip:
    flipped = jax.random.bernoulli(flip_rng, 0.5, (images.shape[0],))
    images = jnp.where(flipped[:, None, None, None], images[:, :, ::-1],
                       images)
  if max_shift:
    size = images.shape[1]
    padded = jnp.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2,
                              (0, 0)), mode='edge')
    offsets = jax.random.randint(shift_rng, (images.shape[0], 2), 0,
                                 2 * max_shift + 1)
    images = jax.vmap(lambda im, o: jax.lax.dynamic_slice(
        im, (o[0], o[1], 0), (size, size, 3)))(padded, offsets)
  return images


def _loss(params, module, images, labels, rng):
  """Mean over attributes of the cross-entropy over labelled images."""
  logits = module.apply({'params': params}, images, train=True,
                        rngs={'dropout': rng})
  losses = []
  for a, head in enumerate(logits):
    known = labels[:, a] != MISSING
    ce = optax.softmax_cross_entropy_with_integer_labels(
        head, jnp.where(known, labels[:, a], 0))
    losses.append(jnp.sum(ce * known) / jnp.maximum(known.sum(), 1))
  return jnp.mean(jnp.stack(losses))


@functools.partial(jax.jit, static_argnums=(0, 1, 6, 7), donate_argnums=(2, 3))
def _train_step(module, optimizer, params, opt_state, batch, rng, flip,
                max_shift):
  images, labels = batch
  aug_rng, dropout_rng = jax.random.split(rng)
  images = _augment(images, aug_rng, flip, max_shift)
  loss, grads = jax.value_and_grad(_loss)(params, module, images, labels,
                                          dropout_rng)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def split_labelled(labels: np.ndarray, holdout_fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, held-out) indices of the images with at least one label."""
  labelled = np.flatnonzero((labels != MISSING).any(axis=1))
  order = np.random.default_rng(seed).permutation(labelled)
  num_held_out = int(round(holdout_fraction * len(order)))
  if not 0 < num_held_out < len(order):
    raise ValueError(
        f'holdout_fraction = {holdout_fraction} of {len(order)} labelled '
        'images leaves no training or no held-out image.')
  return np.sort(order[num_held_out:]), np.sort(order[:num_held_out])


def accuracies(predicted: np.ndarray, labels: np.ndarray,
               attributes: Sequence[str]) -> dict[str, float]:
  """Per attribute, the fraction of labelled images predicted right."""
  result = {}
  for a, name in enumerate(attributes):
    known = labels[:, a] != MISSING
    result[name] = (float(np.mean(predicted[known, a] == labels[known, a]))
                    if known.any() else float('nan'))
  return result


def majority_accuracies(train_labels: np.ndarray, labels: np.ndarray,
                        attributes: Sequence[str]) -> dict[str, float]:
  """Accuracy of always answering the training set's commonest class."""
  result = {}
  for a, name in enumerate(attributes):
    known = train_labels[:, a][train_labels[:, a] != MISSING]
    guess = np.bincount(known).argmax()
    held = labels[:, a][labels[:, a] != MISSING]
    result[name] = float(np.mean(held == guess))
  return result


@dataclasses.dataclass
class Classifier:
  """A trained attribute classifier and what it says about its dataset.

  Attributes:
    module: the AttributeClassifier.
    params: its parameters.
    info: JSON-able facts: 'attributes' {name: class names}, 'image_size',
      'fingerprint', 'default_subset', 'held_out_accuracy' {name: float},
      'majority_accuracy' {name: float}, 'num_train', 'num_held_out',
      'num_reference', 'train_seconds', 'config', 'version'.
    reference_labels: int (M, A), its predictions on all M dataset images.
  """
  module: AttributeClassifier
  params: Any
  info: dict[str, Any]
  reference_labels: np.ndarray

  @property
  def attributes(self) -> list[str]:
    return list(self.info['attributes'])

  @property
  def num_classes(self) -> list[int]:
    return [len(c) for c in self.info['attributes'].values()]

  def predict(self, images, batch_size: int = 512) -> np.ndarray:
    """Class indices int32 (N, A) of images (N, H, W, 3).

    Args:
      images: uint8 pixels or floats in [-1, 1]; other sizes than
        info['image_size'] are resized as the training pipeline does.
      batch_size: images per forward pass.
    """
    images = prepare_images(images, self.info['image_size'])
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    predicted = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      # Few shapes, few compiles: a full batch, or a power of two.
      size = min(batch_size, max(8, 1 << (len(chunk) - 1).bit_length()))
      padded = np.concatenate(
          [chunk, np.zeros((size - len(chunk),) + chunk.shape[1:], np.uint8)])
      predicted.append(np.asarray(
          _predict(self.module, self.params, padded))[:len(chunk)])
    return np.concatenate(predicted).astype(np.int32)

  def classify(self, images) -> dict[str, np.ndarray]:
    """{attribute: int (N,)}: the form `sampling.find_latents` takes."""
    predicted = self.predict(images)
    return {name: predicted[:, a] for a, name in enumerate(self.attributes)}


@functools.partial(jax.jit, static_argnums=0)
def _predict(module, params, images):
  """Most likely class per head: int (B, A)."""
  logits = module.apply({'params': params}, images, train=False)
  return jnp.stack([head.argmax(-1) for head in logits], axis=1)


def prepare_images(images, image_size: int) -> np.ndarray:
  """uint8 (N, image_size, image_size, 3) from uint8 or [-1, 1] images."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
        f'images must be RGB NHWC (N, H, W, 3), got shape {images.shape}.')
  if images.dtype != np.uint8:
    if not np.issubdtype(images.dtype, np.floating):
      raise ValueError(f'images must be uint8 or floats in [-1, 1], got '
                       f'{images.dtype}.')
    images = sampling.to_uint8(images)
  if images.shape[1:3] != (image_size, image_size):
    images = np.stack([sampling.to_uint8(pipeline.to_model_image(
        image, image_size)) for image in images])
  return images


def train_classifier(data: LabelledImages,
                     config: ml_collections.ConfigDict | None = None,
                     log_every_steps: int = 0) -> Classifier:
  """Trains on the labelled images outside the held-out split.

  Args:
    data: from `load_labelled`.
    config: `get_default_classifier_config()` or a variant.
    log_every_steps: log the loss every this many steps (0: never).

  Returns:
    The Classifier, with held-out accuracies in its info and its
    predictions on every image of `data` as reference_labels.
  """
  config = config or get_default_classifier_config()
  train_idx, held_idx = split_labelled(data.labels, config.holdout_fraction,
                                       config.seed)
  num_classes = [len(c) for c in data.attributes.values()]
  module = create_model(num_classes, config)
  start = time.perf_counter()
  rng = jax.random.key(config.seed)
  image_size = data.images.shape[1]
  params = module.init(rng, jnp.zeros((1, image_size, image_size, 3),
                                      jnp.uint8))['params']
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, min(100, config.num_steps // 10 + 1),
      config.num_steps)
  optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
  opt_state = optimizer.init(params)
  batch_size = min(config.batch_size, len(train_idx))
  order_rng = np.random.default_rng(config.seed)
  order, position = order_rng.permutation(train_idx), 0
  for step in range(config.num_steps):
    # Epochs of fresh permutations, remainder dropped: fixed batch shapes.
    if position + batch_size > len(order):
      order, position = order_rng.permutation(train_idx), 0
    idx = np.sort(order[position:position + batch_size])
    position += batch_size
    params, opt_state, loss = _train_step(
        module, optimizer, params, opt_state,
        (data.images[idx], data.labels[idx]), jax.random.fold_in(rng, step),
        config.flip, config.max_shift)
    if log_every_steps and (step + 1) % log_every_steps == 0:
      logger.info('classifier step %d/%d: loss %.4f', step + 1,
                  config.num_steps, float(loss))
  jax.block_until_ready(params)
  train_seconds = time.perf_counter() - start

  attributes = list(data.attributes)
  info = {
      'version': CLASSIFIER_VERSION,
      'attributes': {k: list(v) for k, v in data.attributes.items()},
      'image_size': int(image_size),
      'fingerprint': data.fingerprint,
      'default_subset': list(data.default_subset),
      'num_train': int(len(train_idx)),
      'num_held_out': int(len(held_idx)),
      'num_reference': int(len(data.images)),
      'train_seconds': train_seconds,
      'config': config.to_dict(),
  }
  classifier = Classifier(module, params, info, np.zeros((0, len(attributes)),
                                                         np.int32))
  predicted = classifier.predict(data.images)
  classifier.reference_labels = predicted
  info['held_out_accuracy'] = accuracies(
      predicted[held_idx], data.labels[held_idx], attributes)
  info['majority_accuracy'] = majority_accuracies(
      data.labels[train_idx], data.labels[held_idx], attributes)
  return classifier


# ------------------------------------------------------------ save / load --

PARAMS_FILE, INFO_FILE, REFERENCE_FILE = ('params.msgpack', 'info.json',
                                          'reference_labels.npy')


def save(classifier: Classifier, directory: str) -> str:
  """Writes the three files into `directory` (made whole or not at all)."""
  directory = os.path.abspath(os.path.expanduser(directory))
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.tmp-', dir=parent)
  try:
    with open(os.path.join(staging, PARAMS_FILE), 'wb') as f:
      f.write(flax.serialization.to_bytes(classifier.params))
    with open(os.path.join(staging, INFO_FILE), 'w') as f:
      json.dump(classifier.info, f, indent=1)
    np.save(os.path.join(staging, REFERENCE_FILE),
            classifier.reference_labels.astype(np.int32))
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.replace(staging, directory)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return directory


def load(directory: str) -> Classifier:
  """Reads a classifier that `save` wrote.

  Raises:
    FileNotFoundError: a file is missing.
  """
  directory = os.path.abspath(os.path.expanduser(directory))
  for name in (PARAMS_FILE, INFO_FILE, REFERENCE_FILE):
    if not os.path.isfile(os.path.join(directory, name)):
      raise FileNotFoundError(
          f'{os.path.join(directory, name)} does not exist: not a saved '
          'attribute classifier (train one with train_or_load).')
  with open(os.path.join(directory, INFO_FILE)) as f:
    info = json.load(f)
  config = ml_collections.ConfigDict(info['config'])
  module = create_model([len(c) for c in info['attributes'].values()], config)
  size = info['image_size']
  template = jax.eval_shape(
      lambda: module.init(jax.random.key(0),
                          jnp.zeros((1, size, size, 3), jnp.uint8)))['params']
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  with open(os.path.join(directory, PARAMS_FILE), 'rb') as f:
    params = flax.serialization.from_bytes(template, f.read())
  reference = np.load(os.path.join(directory, REFERENCE_FILE))
  return Classifier(module, params, info, reference)


def cache_directory(data_config: ml_collections.ConfigDict, fingerprint: str,
                    image_size: int,
                    config: ml_collections.ConfigDict) -> str:
  """Where `train_or_load` keeps the classifier of these settings."""
  settings = json.dumps({'version': CLASSIFIER_VERSION,
                         'fingerprint': fingerprint,
                         'config': config.to_dict()}, sort_keys=True,
                        default=list)
  key = hashlib.blake2b(settings.encode(), digest_size=6).hexdigest()
  return os.path.join(builders.resolve_cache_dir(data_config.cache_dir),
                      'classifiers', f'{fingerprint}-s{image_size}-{key}')


def train_or_load(data_config: ml_collections.ConfigDict, image_size: int = 48,
                  labels_csv: str = '',
                  config: ml_collections.ConfigDict | None = None,
                  data: LabelledImages | None = None,
                  log_every_steps: int = 0) -> Classifier:
  """The cached classifier of this dataset and settings; trains it if absent.

  Args:
    data_config: `config.data` of the generator's run (procedural or folder).
    image_size: the generator's image size.
    labels_csv: folder sources: the labels CSV; '' finds labels.csv (see
      `find_labels_csv`).
    config: classifier settings; None means
      `get_default_classifier_config(data_config.source)`.
    data: `load_labelled(data_config, image_size, labels_csv)` when the
      caller has it already; None reads it when needed.
    log_every_steps: as in `train_classifier`.

  Returns:
    The Classifier; its files are in `cache_directory(...)`, also in
    info['cache_directory'].
  """
  config = config or get_default_classifier_config(data_config.source)
  if data is None and data_config.source == 'procedural' and not labels_csv:
    # The build's name is its fingerprint: no need to read 50k images to
    # find a cached classifier.
    fingerprint = os.path.basename(os.fspath(
        pipeline.prepare(data_config).data_dir_root))
  else:
    # A folder's fingerprint covers its labels file, read with the images.
    data = data or load_labelled(data_config, image_size, labels_csv)
    fingerprint = data.fingerprint
  if data is not None and data.images.shape[1] != image_size:
    raise ValueError(f'data holds {data.images.shape[1]}-pixel images, not '
                     f'image_size = {image_size}.')
  directory = cache_directory(data_config, fingerprint, image_size, config)
  if os.path.isfile(os.path.join(directory, INFO_FILE)):
    classifier = load(directory)
  else:
    if data is None:
      data = load_labelled(data_config, image_size, labels_csv)
    classifier = train_classifier(data, config, log_every_steps)
    save(classifier, directory)
  classifier.info['cache_directory'] = directory
  return classifier


# --------------------------------------------------------------- coverage --


def mode_coverage(classifier: Classifier, images,
                  subset: Sequence[str] | None = None,
                  batch_size: int = 512) -> dict[str, float]:
  """`coverage.coverage_report` of images against the classifier's dataset.

  Args:
    classifier: from `train_or_load`.
    images: samples (N, H, W, 3), uint8 or [-1, 1].
    subset: joint attributes; None means info['default_subset'].
    batch_size: images per forward pass.
  """
  return coverage.coverage_report(
      classifier.predict(images, batch_size), classifier.reference_labels,
      classifier.attributes, classifier.num_classes,
      subset or classifier.info['default_subset'])


def coverage_floor(classifier: Classifier, num_samples: int = 10_000,
                   subset: Sequence[str] | None = None,
                   seed: int = 0) -> dict[str, float]:
  """`mode_coverage`'s numbers for `num_samples` real images (the floor)."""
  return coverage.real_floor(
      classifier.reference_labels, classifier.attributes,
      classifier.num_classes, num_samples,
      subset or classifier.info['default_subset'], seed)
