"""Tests of the data layer: drawing, TFDS builders, grain pipeline."""

import io
import logging
import os
import pathlib
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from dcgan import errors
from dcgan.data import avatars, builders, pipeline

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FACES_ZIP = REPO_ROOT.parent / 'shared' / 'datasets' / 'anime-faces-96' / (
    'faces.zip')
NUM_PROCEDURAL = 64


# ------------------------------------------------------------------ drawing


def test_drawing_is_deterministic_per_seed_and_index():
  image, labels = avatars.draw_avatar(0, 5)
  again, labels_again = avatars.draw_avatar(0, 5)
  assert image.shape == (96, 96, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image, again)
  assert labels == labels_again
  assert not np.array_equal(image, avatars.draw_avatar(0, 6)[0])
  assert not np.array_equal(image, avatars.draw_avatar(1, 5)[0])


def test_drawing_other_sizes():
  image, labels = avatars.draw_avatar(3, 7, size=48)
  assert image.shape == (48, 48, 3)
  assert labels == avatars.draw_avatar(3, 7)[1]


def test_labels_cover_the_attribute_table():
  draws = [avatars.sample_attributes(np.random.default_rng((0, i)))
           for i in range(300)]
  assert draws[:3] == [avatars.draw_avatar(0, i)[1] for i in range(3)]
  for name, classes in avatars.ATTRIBUTES.items():
    values = {d[name] for d in draws}
    assert values <= set(range(len(classes))), name
    assert len(values) >= 2, name
  assert len(avatars.ATTRIBUTES['hair_style']) >= 4
  assert len(avatars.ATTRIBUTES['hair_color']) >= 8
  assert len(avatars.ATTRIBUTES['eye_color']) >= 6
  assert {d['hair_style'] for d in draws} == set(
      range(len(avatars.HAIR_STYLES)))
  assert {d['hair_color'] for d in draws} == set(
      range(len(avatars.HAIR_COLORS)))


# -------------------------------------------------------- procedural builder


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp('cache'))


@pytest.fixture(scope='module')
def data_config(cache_dir):
  config = pipeline.get_default_data_config()
  config.num_examples = NUM_PROCEDURAL
  config.cache_dir = cache_dir
  config.num_threads = 2
  config.prefetch = 2
  return config


def test_procedural_round_trip(data_config):
  source = pipeline.load_data_source(data_config)
  assert len(source) == NUM_PROCEDURAL
  for i in (0, 17, NUM_PROCEDURAL - 1):
    example = source[i]
    image, labels = avatars.draw_avatar(0, i)
    assert example['image'].dtype == np.uint8
    assert example['image'].shape == (96, 96, 3)
    np.testing.assert_array_equal(example['image'], image)  # PNG: lossless
    assert {k: int(example[k]) for k in labels} == labels


def test_procedural_second_prepare_reuses_cache(data_config, monkeypatch):
  builder = pipeline.prepare(data_config)
  files = sorted(pathlib.Path(builder.data_dir).iterdir())
  mtimes = [f.stat().st_mtime_ns for f in files]
  calls = []
  original = builders.ProceduralAvatars._split_generators
  monkeypatch.setattr(builders.ProceduralAvatars, '_split_generators',
                      lambda self, dl: calls.append(1) or original(self, dl))
  again = pipeline.prepare(data_config)
  assert again.data_dir == builder.data_dir
  assert calls == []
  assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_procedural_worker_processes_draw_the_same(tmp_path):
  builder = builders.prepare_procedural(6, 2, cache_dir=str(tmp_path),
                                        num_workers=2)
  source = builder.as_data_source(split='train')
  for i in range(6):
    np.testing.assert_array_equal(source[i]['image'],
                                  avatars.draw_avatar(2, i)[0])


def test_procedural_cache_keyed_by_count_and_seed(data_config):
  dirs = {builders.procedural_build_dir(data_config.cache_dir, n, seed)
          for n, seed in ((64, 0), (65, 0), (64, 1))}
  assert len(dirs) == 3


def test_tensorflow_is_never_imported(tmp_path):
  # A fresh interpreter, so that nothing else in the test run interferes.
  code = textwrap.dedent(f"""
      import sys
      from dcgan.data import pipeline
      config = pipeline.get_default_data_config()
      config.num_examples = 16
      config.cache_dir = {str(tmp_path)!r}
      it = pipeline.create_train_iterator(config, image_size=32, batch_size=4,
                                          seed=0)
      next(it)
      pipeline.load_data_source(config)[0]
      loaded = [m for m in sys.modules
                if m == 'tensorflow' or m.startswith('tensorflow.')]
      assert not loaded, loaded
      print('ok')
  """)
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'ok' in result.stdout


def test_drawing_workers_are_spawned_once_jax_runs(tmp_path):
  # Forking after JAX started its threads can deadlock: spawn instead, and
  # produce the same images.
  code = textwrap.dedent(f"""
      import warnings
      warnings.simplefilter('error', RuntimeWarning)  # JAX's fork warning
      import jax
      jax.devices()
      import numpy as np
      from dcgan.data import avatars, builders
      assert builders._mp_context().get_start_method() == 'spawn'
      b = builders.prepare_procedural(8, 3, cache_dir={str(tmp_path)!r},
                                      num_workers=2)
      image = b.as_data_source(split='train')[7]['image']
      assert np.array_equal(image, avatars.draw_avatar(3, 7)[0])
      print('ok')
  """)
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'ok' in result.stdout


# ------------------------------------------------------------ folder builder


def _jpeg(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def _noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
  rng = np.random.default_rng(seed)
  channels = {'RGB': 3, 'RGBA': 4, 'L': 1}[mode]
  array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
  return Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode)


def _source_files() -> dict[str, bytes]:
  """Three good JPEGs, four convertible images and two bad files."""
  good = _jpeg(_noise('RGB', (96, 96), 0))
  rgba = np.zeros((96, 96, 4), np.uint8)
  rgba[:, :48] = (255, 0, 0, 255)  # left: opaque red; right: transparent
  deep = np.full((96, 96), 65535, np.uint16)  # 16-bit white
  return {
      'faces/1.jpg': good,
      'faces/2.jpg': _jpeg(_noise('RGB', (96, 96), 1)),
      'faces/10.jpg': _jpeg(_noise('RGB', (96, 96), 2)),
      'faces/gray.jpg': _jpeg(_noise('L', (96, 96), 3)),
      'faces/rgba.png': _png(Image.fromarray(rgba, 'RGBA')),
      'faces/odd.jpg': _jpeg(_noise('RGB', (100, 80), 4)),
      'faces/deep.png': _png(Image.fromarray(deep)),
      'faces/truncated.jpg': good[:len(good) // 2],
      'faces/text.jpg': b'this is not an image\n',
      'faces/notes.txt': b'not an image extension: ignored\n',
  }


NUM_USABLE, NUM_SKIPPED, NUM_CONVERTED = 7, 2, 4


def _write_folder(root: pathlib.Path) -> pathlib.Path:
  for name, data in _source_files().items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
  return root


def _write_zip(path: pathlib.Path) -> pathlib.Path:
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('faces/', b'')
    archive.writestr('__MACOSX/faces/._1.jpg', b'junk')
    for name, data in _source_files().items():
      archive.writestr(name, data)
  return path


def _builder_warnings(caplog) -> list[logging.LogRecord]:
  return [r for r in caplog.records
          if r.name == builders.__name__ and r.levelno >= logging.WARNING]


@pytest.mark.parametrize('kind', ['folder', 'zip'])
def test_folder_builder_converts_and_skips(kind, tmp_path, caplog):
  if kind == 'folder':
    source = _write_folder(tmp_path / 'src')
  else:
    source = _write_zip(tmp_path / 'faces.zip')
  caplog.set_level(logging.WARNING)
  builder = builders.prepare_folder(str(source), cache_dir=str(tmp_path / 'c'))
  data = builder.as_data_source(split='train')
  names = [data[i]['name'].decode() for i in range(len(data))]
  assert names == ['faces/1.jpg', 'faces/2.jpg', 'faces/10.jpg',
                   'faces/deep.png', 'faces/gray.jpg', 'faces/odd.jpg',
                   'faces/rgba.png']
  images = {n: data[i]['image'] for i, n in enumerate(names)}
  for image in images.values():
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
  # A good JPEG is stored as its own bytes: identical pixels.
  original = np.asarray(Image.open(io.BytesIO(_source_files()['faces/1.jpg'])))
  np.testing.assert_array_equal(images['faces/1.jpg'], original)
  rgba = images['faces/rgba.png']
  assert (rgba[:, :40] == (255, 0, 0)).all()
  assert (rgba[:, 56:] == 255).all()  # transparency -> white
  assert (images['faces/deep.png'] == 255).all()
  gray = images['faces/gray.jpg']
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])

  records = _builder_warnings(caplog)
  assert len(records) == 1
  message = records[0].getMessage()
  assert f'skipped {NUM_SKIPPED} of {NUM_USABLE + NUM_SKIPPED}' in message
  assert 'faces/truncated.jpg (truncated or corrupt' in message
  assert 'faces/text.jpg (not an image' in message
  assert f'converted {NUM_CONVERTED}' in message
  assert builder.info.metadata['num_skipped'] == NUM_SKIPPED


def test_folder_builder_is_cached_and_keyed_by_contents(tmp_path, monkeypatch):
  source = _write_folder(tmp_path / 'src')
  scans = []
  original = builders._scan_folder
  monkeypatch.setattr(builders, '_scan_folder',
                      lambda *a: scans.append(1) or original(*a))
  first = builders.prepare_folder(str(source), cache_dir=str(tmp_path / 'c'))
  again = builders.prepare_folder(str(source), cache_dir=str(tmp_path / 'c'))
  assert len(scans) == 1 and again.data_dir == first.data_dir
  # Not an image: does not change the key.
  (source / 'faces' / 'notes.txt').write_bytes(b'edited')
  builders.prepare_folder(str(source), cache_dir=str(tmp_path / 'c'))
  assert len(scans) == 1
  (source / 'faces' / '2.jpg').write_bytes(_jpeg(_noise('RGB', (96, 96), 9)))
  changed = builders.prepare_folder(str(source), cache_dir=str(tmp_path / 'c'))
  assert len(scans) == 2 and changed.data_dir != first.data_dir
  expected = np.asarray(Image.open(source / 'faces' / '2.jpg'))
  np.testing.assert_array_equal(
      changed.as_data_source(split='train')[1]['image'], expected)


# ------------------------------------------------------------ bad data
# One row per kind of bad or unusual file: what the folder builder does with
# it (README, "Your own faces"). Each row is built next to one good image.


def _png_header_only(width: int, height: int) -> bytes:
  """A PNG whose header claims width x height, with no pixel data."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data)))
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IEND', b'')


def _cmyk_red() -> bytes:
  buffer = io.BytesIO()
  Image.new('CMYK', (96, 96), (0, 255, 255, 0)).save(buffer, format='JPEG')
  return buffer.getvalue()


def _write_bytes(data: bytes):
  return lambda path: path.write_bytes(data)


def _unreadable(path: pathlib.Path) -> None:
  path.write_bytes(_jpeg(_noise('RGB', (96, 96), 5)))
  path.chmod(0)


def _broken_link(path: pathlib.Path) -> None:
  path.symlink_to(path.parent / 'gone.jpg')


_GOOD_JPEG = _jpeg(_noise('RGB', (96, 96), 0))

# (name, file name, how to write it, expected note or None when kept, check
# of the stored 96x96 image when kept)
BAD_DATA_ROWS = [
    ('truncated_jpeg', 'x.jpg', _write_bytes(_GOOD_JPEG[:len(_GOOD_JPEG) // 2]),
     'truncated or corrupt', None),
    ('not_an_image', 'x.jpg', _write_bytes(b'%PDF-1.4 not an image\n'),
     'not an image', None),
    ('grayscale', 'x.jpg', _write_bytes(_jpeg(_noise('L', (96, 96), 3))),
     None, lambda im: (im[..., 0] == im[..., 1]).all()),
    ('rgba', 'x.png', _write_bytes(_png(Image.new('RGBA', (96, 96),
                                                  (0, 0, 255, 0)))),
     None, lambda im: (im == 255).all()),  # fully transparent -> white
    ('cmyk', 'x.jpg', _write_bytes(_cmyk_red()),
     None, lambda im: (np.abs(im.astype(int) - (255, 0, 0)) <= 8).all()),
    ('png_16_bit', 'x.png',
     _write_bytes(_png(Image.fromarray(np.full((96, 96), 25700, np.uint16)))),
     None, lambda im: (im == 100).all()),  # 25700 / 257
    ('tiny', 'x.png', _write_bytes(_png(_noise('RGB', (4, 4), 6))),
     'too small: 4x4', None),
    ('small', 'x.png', _write_bytes(_png(Image.new('RGB', (12, 10),
                                                   (0, 200, 0)))),
     None, lambda im: (np.abs(im.astype(int) - (0, 200, 0)) <= 2).all()),
    ('huge', 'x.jpg', _write_bytes(_jpeg(Image.new('RGB', (3000, 2000),
                                                   (200, 0, 0)))),
     None, lambda im: (np.abs(im.astype(int) - (200, 0, 0)) <= 8).all()),
    ('decompression_bomb', 'x.png', _write_bytes(_png_header_only(30000,
                                                                  30000)),
     'too large', None),
    ('unreadable', 'x.jpg', _unreadable, 'unreadable: Permission denied',
     None),
    ('broken_link', 'x.jpg', _broken_link, 'unreadable', None),
]


@pytest.mark.parametrize('name, file_name, write, skipped_as, check',
                         BAD_DATA_ROWS, ids=[r[0] for r in BAD_DATA_ROWS])
def test_bad_data_table(name, file_name, write, skipped_as, check, tmp_path,
                        caplog):
  if name == 'unreadable' and os.geteuid() == 0:
    pytest.skip('root reads files without read permission; the broken_link '
                'row covers an unreadable file')
  source = tmp_path / 'src'
  source.mkdir()
  (source / 'a.jpg').write_bytes(_GOOD_JPEG)
  write(source / file_name)
  caplog.set_level(logging.WARNING)
  builder = builders.prepare_folder(str(source), cache_dir=str(tmp_path / 'c'))
  data = builder.as_data_source(split='train')
  names = [data[i]['name'].decode() for i in range(len(data))]
  warnings = [r.getMessage() for r in _builder_warnings(caplog)]
  if skipped_as:
    assert names == ['a.jpg']
    assert builder.info.metadata['num_skipped'] == 1
    assert len(warnings) == 1 and 'skipped 1 of 2' in warnings[0]
    assert f'{file_name} ({skipped_as}' in warnings[0]
  else:
    assert names == ['a.jpg', file_name]
    assert builder.info.metadata['num_converted'] == 1
    assert len(warnings) == 1 and 'skipped 0 of 2' in warnings[0]
    assert 'converted 1' in warnings[0]
    image = data[1]['image']
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert check(image)


def test_bad_zip_member_is_skipped(tmp_path, caplog):
  path = tmp_path / 'faces.zip'
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
    archive.writestr('a.jpg', _GOOD_JPEG)
    archive.writestr('b.jpg', _GOOD_JPEG)
  raw = bytearray(path.read_bytes())
  second = raw.index(b'b.jpg') + 200  # inside b.jpg's stored bytes
  raw[second] ^= 0xFF
  path.write_bytes(bytes(raw))
  caplog.set_level(logging.WARNING)
  builder = builders.prepare_folder(str(path), cache_dir=str(tmp_path / 'c'))
  assert len(builder.as_data_source(split='train')) == 1
  [warning] = [r.getMessage() for r in _builder_warnings(caplog)]
  assert 'b.jpg (unreadable: Bad CRC-32' in warning


def _empty_zip(path: pathlib.Path) -> pathlib.Path:
  zipfile.ZipFile(path, 'w').close()
  return path


def _folder_of(tmp_path: pathlib.Path, files: dict[str, bytes]):
  folder = tmp_path / 'folder'
  folder.mkdir()
  for name, data in files.items():
    (folder / name).write_bytes(data)
  return folder


# (name, make the path, error type, message pattern)
SOURCE_ROWS = [
    ('empty_folder', lambda t: _folder_of(t, {}), builders.SourceError,
     r"No usable image in '.*folder': 0 files"),
    ('no_usable_file', lambda t: _folder_of(t, {'a.jpg': b'nope'}),
     builders.SourceError, r"No usable image in '.*folder': 1 files"),
    ('only_other_files', lambda t: _folder_of(t, {'notes.txt': b'x'}),
     builders.SourceError, r'No usable image.*folder'),
    ('empty_zip', lambda t: _empty_zip(t / 'faces.zip'), builders.SourceError,
     r'No usable image.*faces\.zip'),
    ('missing_path', lambda t: t / 'nowhere' / 'faces.zip',
     FileNotFoundError, r'nowhere.*does not exist'),
    ('text_file', lambda t: (t / 'faces.txt', (t / 'faces.txt').write_text(
        'x'))[0], builders.SourceError, 'neither a folder nor a .zip'),
    ('broken_zip', lambda t: (t / 'f.zip', (t / 'f.zip').write_bytes(
        b'PK\x03\x04broken'))[0], builders.SourceError,
     'neither a folder nor a .zip'),
]


@pytest.mark.parametrize('name, make, error, match', SOURCE_ROWS,
                         ids=[r[0] for r in SOURCE_ROWS])
def test_unusable_source_is_a_clear_error(name, make, error, match, tmp_path):
  del name
  with pytest.raises(error, match=match):
    builders.prepare_folder(str(make(tmp_path)),
                            cache_dir=str(tmp_path / 'c'))


def test_cli_reports_an_unusable_source_without_traceback(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.avatar', '--workdir',
       str(tmp_path / 'run'), '--config',
       str(REPO_ROOT / 'experiments/configs/tiny.py'),
       '--config.data.source=folder', f'--config.data.path={empty}',
       f'--config.data.cache_dir={tmp_path / "c"}'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode != 0
  assert f"Error: No usable image in '{empty}'" in result.stderr
  assert 'Traceback' not in result.stderr


# ------------------------------------------------------------------- config


@pytest.mark.parametrize('key, value, match', [
    ('source', 'web', r"config\.data\.source = 'web'.*procedural"),
    ('path', '/x', r"config\.data\.path = '/x'.*source is 'procedural'"),
    ('num_examples', 0, r'config\.data\.num_examples = 0.*>= 1'),
    ('source_size', 8, r'config\.data\.source_size = 8'),
    ('num_threads', -1, r'config\.data\.num_threads = -1'),
    ('dataset_seed', -1, r'config\.data\.dataset_seed = -1.*>= 0'),
])
def test_validate_names_key_value_and_allowed(key, value, match):
  config = pipeline.get_default_data_config()
  config[key] = value
  with pytest.raises(ValueError, match=match):
    pipeline.validate_data_config(config)


def test_validate_folder_needs_path_and_rejects_typos():
  config = pipeline.get_default_data_config()
  pipeline.validate_data_config(config)
  config.source = 'folder'
  with pytest.raises(ValueError, match=r"config\.data\.path = ''"):
    pipeline.validate_data_config(config)
  config = pipeline.get_default_data_config()
  config.num_exemples = 5
  with pytest.raises(ValueError, match=r'config\.data\.num_exemples'):
    pipeline.validate_data_config(config)


def test_describe(data_config):
  summary = pipeline.describe(data_config)
  assert summary['source'] == 'procedural'
  assert summary['num_examples'] == NUM_PROCEDURAL
  assert summary['fingerprint'].startswith(f'n{NUM_PROCEDURAL}-seed0')


# ----------------------------------------------------------------- pipeline


def _iterator(config, seed=0, batch_size=8, image_size=32):
  return pipeline.create_train_iterator(
      config, image_size=image_size, batch_size=batch_size, seed=seed)


def _take(iterator, n: int) -> list[np.ndarray]:
  return [next(iterator)['image'] for _ in range(n)]


def _keys(batches) -> list[bytes]:
  """One identity per image (the procedural images are all distinct)."""
  return [image.tobytes() for batch in batches for image in batch]


@pytest.mark.parametrize('image_size', [32, 48])
def test_pipeline_batches(data_config, image_size):
  batch = next(_iterator(data_config, image_size=image_size))
  assert set(batch) == {'image'}
  assert batch['image'].shape == (8, image_size, image_size, 3)
  assert batch['image'].dtype == np.float32
  assert -1.0 <= batch['image'].min() < 0 < batch['image'].max() <= 1.0


def test_pipeline_resizes_like_the_tutorial(data_config):
  # Unshuffled reference: look every image of the first batch up by value.
  source = pipeline.load_data_source(data_config)
  expected = {}
  for i in range(len(source)):
    small = Image.fromarray(source[i]['image']).resize((32, 32),
                                                       Image.BILINEAR)
    expected[(np.asarray(small, np.float32) / 127.5 - 1).tobytes()] = i
  batch = next(_iterator(data_config))['image']
  assert all(image.tobytes() in expected for image in batch)


def test_pipeline_epochs_are_reshuffled_and_seeded(data_config):
  per_epoch = NUM_PROCEDURAL // 8
  first = _keys(_take(_iterator(data_config), 2 * per_epoch))
  epoch0, epoch1 = first[:NUM_PROCEDURAL], first[NUM_PROCEDURAL:]
  assert len(set(epoch0)) == NUM_PROCEDURAL
  assert set(epoch0) == set(epoch1) and epoch0 != epoch1
  assert _keys(_take(_iterator(data_config), 2 * per_epoch)) == first
  assert _keys(_take(_iterator(data_config, seed=1), per_epoch)) != epoch0


def test_pipeline_drops_the_remainder_of_each_epoch(data_config):
  per_epoch = NUM_PROCEDURAL // 10  # 6 batches, 4 images left out
  keys = _keys(_take(_iterator(data_config, batch_size=10), 2 * per_epoch))
  assert len(set(keys[:60])) == 60 and len(set(keys[60:])) == 60


@pytest.mark.parametrize('skip', [3, 8, 9])  # mid-epoch, boundary, next epoch
def test_pipeline_resumes_exactly_from_state(data_config, skip):
  iterator = _iterator(data_config)
  _take(iterator, skip)
  state = iterator.get_state()
  expected = _take(iterator, 10)  # crosses an epoch boundary (8 per epoch)
  restored = _iterator(data_config)
  restored.set_state(state)
  for want, got in zip(expected, _take(restored, 10)):
    np.testing.assert_array_equal(want, got)


def test_pipeline_state_round_trips_through_orbax(data_config, tmp_path):
  iterator = _iterator(data_config)
  _take(iterator, 5)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.save(5, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
  expected = _take(iterator, 6)
  restored = _iterator(data_config, seed=0)
  _take(restored, 2)  # a different position, overwritten by the restore
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.restore(5, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(restored)))
  for want, got in zip(expected, _take(restored, 6)):
    np.testing.assert_array_equal(want, got)


def test_pipeline_rejects_batch_larger_than_dataset(data_config):
  with pytest.raises(errors.ConfigError,
                     match=r'config\.batch_size = 65 is larger than the '
                     r'dataset \(64 images\)'):
    _iterator(data_config, batch_size=NUM_PROCEDURAL + 1)


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not FACES_ZIP.exists(),
                    reason=f'real faces not present at {FACES_ZIP}')
def test_real_faces_zip_subset(tmp_path):
  # A few hundred entries keep the test fast; the benchmark does the whole zip.
  subset = tmp_path / 'faces.zip'
  with zipfile.ZipFile(FACES_ZIP) as src, zipfile.ZipFile(subset, 'w') as dst:
    names = [n for n in src.namelist() if n.endswith('.jpg')][:300]
    for name in names:
      dst.writestr(name, src.read(name))
  config = pipeline.get_default_data_config()
  config.source, config.path = 'folder', str(subset)
  config.cache_dir = str(tmp_path / 'cache')
  assert pipeline.describe(config)['num_examples'] == 300
  example = pipeline.load_data_source(config)[0]
  assert example['image'].shape == (96, 96, 3)
  batch = next(_iterator(config, batch_size=16, image_size=48))['image']
  assert batch.shape == (16, 48, 48, 3)
  assert -1.0 <= batch.min() and batch.max() <= 1.0 and batch.std() > 0.1
