"""TFDS builders for the two image sources, written as ArrayRecord without TF.

* `ProceduralAvatars`: `avatars.draw_avatar(seed, i)` for i < num_examples,
  with one ClassLabel per attribute of `avatars.ATTRIBUTES`.
* `ImageFolderOrZip`: the tutorial's data, a folder or a .zip of images (e.g.
  `faces/<n>.jpg`), read from the user's path and never downloaded.

Both store `image` as a `tfds.features.Image` (encoded bytes: PNG, or the
source JPEG when it is already usable as is) in ArrayRecord files, and are read
back with `builder.as_data_source(split='train')`. TensorFlow is never
imported: tfds encodes images with TF only when given arrays, so the workers
pass encoded bytes, which tfds stores as they are; reading decodes with PIL.

Each build lives in its own directory under the cache root, named by what
determines its contents (count, seed and drawing version; or a hash of the
source's bytes), so a second `prepare_*` call reuses it and a changed source
gets a new build.
"""

import concurrent.futures
import dataclasses
import hashlib
import inspect
import io
import logging
import multiprocessing
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from etils import epath
import tensorflow_datasets as tfds
from PIL import Image

from dcgan import errors
from dcgan.data import avatars

DEFAULT_CACHE_DIR = '~/.cache/dcgan/datasets'
CACHE_DIR_ENV = 'DCGAN_DATA_DIR'
FILE_FORMAT = 'array_record'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif',
                    '.tiff')
# Bump when the folder preprocessing changes, so that caches are rebuilt.
FOLDER_PREPROCESSING_VERSION = 2
# Images outside these bounds are skipped: a few pixels hold no face, and
# decoding a gigapixel file (or a decompression bomb) would exhaust memory.
MIN_IMAGE_SIDE = 8
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's bomb threshold, ~89 Mpx
_PNG_LEVEL = 1  # fast; level 6 saves only ~5% on these images
_MIN_PER_WORKER = 1000  # avatars per drawing process
_WARN_NAMES = 5  # how many skipped file names the summary warning lists

logger = logging.getLogger(__name__)


class SourceError(errors.RunError, ValueError):
  """`config.data.path` is not a folder or .zip holding a usable image."""


def resolve_cache_dir(cache_dir: str = '') -> str:
  """'' -> $DCGAN_DATA_DIR if set, else ~/.cache/dcgan/datasets."""
  cache_dir = cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
  return os.path.abspath(os.path.expanduser(cache_dir))


def _image_feature(size: int) -> tfds.features.Image:
  # 'png' is what tfds would use to encode arrays; we hand it bytes (PNG, or a
  # source JPEG as is) and PIL reads either, so it is informational only.
  return tfds.features.Image(shape=(size, size, 3), encoding_format='png')


def _encode_png(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format='PNG', compress_level=_PNG_LEVEL)
  return buffer.getvalue()


def _prepare(builder: tfds.core.GeneratorBasedBuilder) -> None:
  # Nothing is downloaded, but tfds still makes its downloads/ folder: keep it
  # inside this build's directory rather than the shared cache root.
  builder.download_and_prepare(
      download_dir=os.path.join(builder.data_dir_root, 'downloads'))


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder defined here, not in a tfds dataset package."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds's own lookup needs the `importlib_resources` backport for any
    # builder that lives in a package; the source file is all it wants.
    return epath.Path(inspect.getfile(cls))


# ---------------------------------------------------------------- procedural


def _draw_encoded(args: tuple[int, int, int]) -> tuple[bytes, dict[str, int]]:
  """Worker: (seed, index, size) -> (PNG bytes, labels)."""
  seed, index, size = args
  image, labels = avatars.draw_avatar(seed, index, size=size)
  return _encode_png(Image.fromarray(image)), labels


def _jax_started() -> bool:
  """Whether JAX has initialised a backend (and so runs its own threads)."""
  # Private, hence the defensive getattr: JAX's own fork warning keys on it.
  bridge = sys.modules.get('jax._src.xla_bridge')
  return bool(bridge and getattr(bridge, '_backends', None))


def _mp_context() -> multiprocessing.context.BaseContext:
  """'fork' (fast, works from any script) unless JAX already runs threads.

  Forking a process whose JAX backend is up can deadlock (JAX warns), so then
  workers are spawned, which needs the usual `if __name__ == '__main__':`
  guard in the calling script (absl's `app.run(main)` has it).
  """
  methods = multiprocessing.get_all_start_methods()
  if 'fork' in methods and not _jax_started():
    return multiprocessing.get_context('fork')
  return multiprocessing.get_context('spawn')


def _pool_map(fn, items, num_workers: int, chunksize: int) -> Iterator[Any]:
  """Ordered map of `fn` over `items` in `num_workers` processes."""
  if num_workers <= 1:
    yield from map(fn, items)
    return
  with _mp_context().Pool(num_workers) as pool:
    yield from pool.imap(fn, items, chunksize=chunksize)


def _default_workers(num_examples: int) -> int:
  # One process per CPU, but none for small sets: starting workers (seconds
  # when spawned) costs more than drawing a few hundred avatars (~2 ms each).
  return min(os.cpu_count() or 1, max(1, num_examples // _MIN_PER_WORKER))


class ProceduralAvatars(_Builder):
  """Procedural cartoon avatars: image + one ClassLabel per attribute."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def __init__(self, *, num_examples: int, seed: int, image_size: int = 96,
               num_workers: int | None = None, **kwargs):
    self._num_examples, self._seed = num_examples, seed
    self._image_size = image_size
    self._num_workers = num_workers or _default_workers(num_examples)
    super().__init__(file_format=FILE_FORMAT, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {'image': _image_feature(self._image_size)}
    features.update({name: tfds.features.ClassLabel(names=list(classes))
                     for name, classes in avatars.ATTRIBUTES.items()})
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict(features),
        # Keep the drawing order: example i is draw_avatar(seed, i).
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(
            seed=self._seed, drawing_version=avatars.DRAWING_VERSION))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    jobs = ((self._seed, i, self._image_size)
            for i in range(self._num_examples))
    results = _pool_map(_draw_encoded, jobs, self._num_workers, chunksize=256)
    for i, (png, labels) in enumerate(results):
      yield i, {'image': png, **labels}


def procedural_build_dir(cache_dir: str, num_examples: int, seed: int,
                         image_size: int = 96) -> str:
  """Where the build for these settings lives under the cache root."""
  key = (f'n{num_examples}-seed{seed}-s{image_size}'
         f'-draw{avatars.DRAWING_VERSION}')
  return os.path.join(resolve_cache_dir(cache_dir), 'procedural', key)


def prepare_procedural(num_examples: int, seed: int, *, image_size: int = 96,
                       cache_dir: str = '',
                       num_workers: int | None = None) -> ProceduralAvatars:
  """Builds the procedural set once (cached) and returns its builder.

  Args:
    num_examples: how many avatars (>= 1).
    seed: the drawing seed (>= 0).
    image_size: stored image size (96 draws at the native size).
    cache_dir: cache root; '' means $DCGAN_DATA_DIR or ~/.cache/dcgan/datasets.
    num_workers: drawing processes; None means one per CPU (one per 1000
      avatars for small sets).

  Returns:
    The prepared builder; read it with `.as_data_source(split='train')`.
  """
  builder = ProceduralAvatars(
      num_examples=num_examples, seed=seed, image_size=image_size,
      num_workers=num_workers,
      data_dir=procedural_build_dir(cache_dir, num_examples, seed, image_size))
  _prepare(builder)
  return builder


# -------------------------------------------------------------- image folder


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One candidate image file: its name in the source and how to read it."""
  name: str
  path: str  # the file, or the .zip that holds `name`


def _natural_key(name: str) -> list[Any]:
  # faces/2.jpg before faces/10.jpg, like the numbering.
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def _is_candidate(name: str) -> bool:
  base = os.path.basename(name)
  return (not base.startswith('.') and '__MACOSX' not in name and
          base.lower().endswith(IMAGE_EXTENSIONS))


def _list_entries(path: str) -> list[_Entry]:
  """Candidate image files of a folder (recursive) or a .zip, in order."""
  if os.path.isdir(path):
    names = []
    for root, dirs, files in os.walk(path):
      dirs.sort()
      names += [os.path.relpath(os.path.join(root, f), path) for f in files]
    return [_Entry(n, os.path.join(path, n))
            for n in sorted(filter(_is_candidate, names), key=_natural_key)]
  with zipfile.ZipFile(path) as archive:
    names = [i.filename for i in archive.infolist() if not i.is_dir()]
  return [_Entry(n, path)
          for n in sorted(filter(_is_candidate, names), key=_natural_key)]


def check_source_path(path: str) -> str:
  """Returns the absolute path of a folder or .zip, or raises naming it."""
  if not path:
    raise ValueError(
        "config.data.path is '' but config.data.source is 'folder': set it to "
        'a folder or a .zip of images (e.g. faces/<n>.jpg).')
  full = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(full):
    raise FileNotFoundError(
        f'config.data.path {path!r} does not exist (resolved to {full!r}); '
        'set it to a folder or a .zip of images.')
  if not os.path.isdir(full) and not zipfile.is_zipfile(full):
    raise SourceError(
        f'config.data.path {path!r} is neither a folder nor a .zip file.')
  return full


def source_fingerprint(path: str) -> str:
  """Hash of the source's image bytes (the whole file for a .zip).

  Renaming, adding or editing any candidate image changes it; other files in
  a folder (a README, labels) do not.
  """
  digest = hashlib.blake2b(digest_size=16)
  if os.path.isfile(path):
    with open(path, 'rb') as f:
      while chunk := f.read(1 << 22):
        digest.update(chunk)
    return digest.hexdigest()
  for entry, (data, error) in zip(*_read_all(path)):
    if data is None:  # its name and the error still key the build
      digest.update(f'{entry.name}\0unreadable {error}\0'.encode())
      continue
    digest.update(f'{entry.name}\0{len(data)}\0'.encode())
    digest.update(data)
  return digest.hexdigest()


def _read_all(path: str) -> tuple[list[_Entry],
                                  Iterator[tuple[bytes | None, str]]]:
  """(entries, iterator of (bytes, '') or (None, why unreadable) per entry)."""
  entries = _list_entries(path)
  return entries, _iter_bytes(path, entries)


def _iter_bytes(path: str, entries: list[_Entry]
                ) -> Iterator[tuple[bytes | None, str]]:
  """Each entry's bytes, or None and the reason it cannot be read.

  A file without read permission, a broken link, a zip member with a bad CRC:
  such a file is skipped like an undecodable one rather than ending the build.
  """
  if os.path.isdir(path):
    for entry in entries:
      try:
        with open(entry.path, 'rb') as f:
          yield f.read(), ''
      except OSError as e:
        yield None, f'unreadable: {e.strerror or e}'
    return
  with zipfile.ZipFile(path) as archive:
    for entry in entries:
      try:
        yield archive.read(entry.name), ''
      # RuntimeError: encrypted; NotImplementedError: unknown compression.
      except (OSError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError,
              NotImplementedError) as e:
        yield None, f'unreadable: {e}'


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
  """Converts any PIL mode to RGB; returns (image, what was converted).

  Transparency is composited onto white (the usual page colour of avatar
  art), 16/32-bit grayscale is scaled to 8 bits, everything else goes through
  PIL's own conversion.
  """
  mode = image.mode
  if mode == 'RGB':
    return image, None
  if mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
    array = np.asarray(image, dtype=np.float64)
    # 16-bit modes always span 0-65535; 32-bit ones say nothing of their
    # range, so values above 255 are taken for 16-bit data.
    if mode.startswith('I;16') or array.max() > 255:
      array = array / 257.0
    gray = Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8))
    return gray.convert('RGB'), f'{mode} grayscale'
  if mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (
      mode == 'P' and 'transparency' in image.info):
    rgba = image.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB'), f'{mode} alpha'
  return image.convert('RGB'), mode


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
  """Center-crops to a square of the short side, then resizes to `size`."""
  w, h = image.size
  side = min(w, h)
  left, top = (w - side) // 2, (h - side) // 2
  image = image.crop((left, top, left + side, top + side))
  if side != size:
    image = image.resize((size, size), Image.LANCZOS)
  return image


def load_image(data: bytes, size: int) -> tuple[bytes | None, str]:
  """Decodes and normalises one file's bytes.

  Args:
    data: the file's bytes.
    size: the stored (square) size.

  Returns:
    (encoded, note): `encoded` is the original bytes when the file is already
    a size x size RGB JPEG, else a PNG of the converted image, or None when
    the file is not a readable image; `note` says what was done or why it was
    skipped.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      w, h = image.size  # from the header: nothing decoded yet
      if w * h > MAX_IMAGE_PIXELS:
        return None, f'too large: {w}x{h} pixels'
      if min(w, h) < MIN_IMAGE_SIDE:
        return None, f'too small: {w}x{h} pixels'
      image.load()  # decodes it all: a truncated file fails here
      if (image.format == 'JPEG' and image.mode == 'RGB' and
          image.size == (size, size)):
        return data, 'ok'
      rgb, converted = _to_rgb(image)
      notes = [converted] if converted else []
      if rgb.size != (size, size):
        notes.append(f'{image.size[0]}x{image.size[1]}')
      if image.format != 'JPEG':
        notes.append(str(image.format))
      return _encode_png(center_crop_resize(rgb, size)), ', '.join(notes)
  except Image.UnidentifiedImageError:
    return None, 'not an image'
  except Image.DecompressionBombError as e:
    return None, f'too large: {e}'
  except (OSError, SyntaxError, ValueError) as e:
    return None, f'truncated or corrupt: {e}'
  except Exception as e:  # pylint: disable=broad-except
    # PIL's decoders raise other errors on malformed files too; one bad file
    # must not end a build of thousands.
    return None, f'corrupt: {type(e).__name__}: {e}'


@dataclasses.dataclass
class _FolderScan:
  """Usable images of a source, plus what was skipped or converted.

  The encoded images are held in memory (~3 KB per 96x96 JPEG: ~150 MB for
  the tutorial's 51k faces) so that nothing is written before we know that
  the source has at least one usable image.
  """
  images: list[bytes]
  names: list[str]
  skipped: list[tuple[str, str]]
  converted: int


def _scan_folder(path: str, size: int, num_threads: int) -> _FolderScan:
  """Decodes every candidate file (in threads: PIL releases the GIL)."""
  entries, contents = _read_all(path)
  scan = _FolderScan([], [], [], 0)

  def load(content: tuple[bytes | None, str]) -> tuple[bytes | None, str]:
    data, error = content
    return (None, error) if data is None else load_image(data, size)

  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    results = pool.map(load, contents)
    for entry, (encoded, note) in zip(entries, results):
      if encoded is None:
        scan.skipped.append((entry.name, note))
        continue
      scan.images.append(encoded)
      scan.names.append(entry.name)
      scan.converted += note != 'ok'
  _report(path, len(entries), scan)
  return scan


def _report(path: str, num_candidates: int, scan: _FolderScan) -> None:
  """One summary warning for skipped and converted files; or the error."""
  if not scan.images:
    raise SourceError(
        f'No usable image in {path!r}: {num_candidates} files with an image '
        f'extension {IMAGE_EXTENSIONS}, none readable. Point config.data.path '
        'at a folder or a .zip of JPEG/PNG images (e.g. faces/<n>.jpg), or use '
        "config.data.source = 'procedural'.")
  if not scan.skipped and not scan.converted:
    return
  shown = '; '.join(f'{n} ({why})' for n, why in scan.skipped[:_WARN_NAMES])
  more = '' if len(scan.skipped) <= _WARN_NAMES else ', ...'
  logger.warning(
      'Image source %s: skipped %d of %d files that are not readable images%s;'
      ' converted %d to RGB at the stored size (grayscale, transparency on '
      'white, other sizes center-cropped and resized).',
      path, len(scan.skipped), num_candidates,
      f': {shown}{more}' if scan.skipped else '', scan.converted)


class ImageFolderOrZip(_Builder):
  """Images of a folder or .zip, as the tutorial preprocessed them."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Pass the folder or .zip of images (e.g. the tutorial\'s faces/) as '
      '`path`; nothing is downloaded.')

  def __init__(self, *, path: str, image_size: int = 96,
               num_threads: int | None = None, **kwargs):
    self._path, self._image_size = path, image_size
    self._num_threads = num_threads or 2 * (os.cpu_count() or 1)
    super().__init__(file_format=FILE_FORMAT, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': _image_feature(self._image_size),
            'name': tfds.features.Text(),
        }),
        disable_shuffling=True,  # keep the source's (natural) name order
        metadata=tfds.core.MetadataDict(source=self._path))

  def _split_generators(self, dl_manager):
    del dl_manager  # the source is the user's path
    scan = _scan_folder(self._path, self._image_size, self._num_threads)
    self.info.metadata.update(num_skipped=len(scan.skipped),
                              num_converted=scan.converted)
    return {'train': self._generate_examples(scan)}

  def _generate_examples(self, scan: _FolderScan):
    for i, (image, name) in enumerate(zip(scan.images, scan.names)):
      yield i, {'image': image, 'name': name}


def folder_build_dir(cache_dir: str, fingerprint: str,
                     image_size: int = 96) -> str:
  """Where the build of a source with this fingerprint lives."""
  key = f'{fingerprint}-s{image_size}-prep{FOLDER_PREPROCESSING_VERSION}'
  return os.path.join(resolve_cache_dir(cache_dir), 'folder', key)


def prepare_folder(path: str, *, image_size: int = 96, cache_dir: str = '',
                   num_threads: int | None = None) -> ImageFolderOrZip:
  """Builds a folder or .zip of images once per content (cached).

  Args:
    path: a folder (searched recursively) or a .zip of image files.
    image_size: stored (square) size; other sizes are center-cropped, resized.
    cache_dir: cache root; '' means $DCGAN_DATA_DIR or ~/.cache/dcgan/datasets.
    num_threads: decoding threads; None means two per CPU.

  Returns:
    The prepared builder; read it with `.as_data_source(split='train')`.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: `path` is not a folder or zip, or holds no usable image.
  """
  full = check_source_path(path)
  builder = ImageFolderOrZip(
      path=full, image_size=image_size, num_threads=num_threads,
      data_dir=folder_build_dir(cache_dir, source_fingerprint(full),
                                image_size))
  _prepare(builder)
  return builder
