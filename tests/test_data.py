"""Tests of the data layer: drawing, TFDS builders, grain pipeline."""

import io
import logging
import pathlib
import subprocess
import sys
import textwrap
import zipfile

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

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


def test_folder_without_usable_images_names_the_path(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match='No usable image.*empty'):
    builders.prepare_folder(str(empty), cache_dir=str(tmp_path / 'c'))
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'a.jpg').write_bytes(b'nope')
  with pytest.raises(ValueError, match='No usable image.*bad'):
    builders.prepare_folder(str(bad), cache_dir=str(tmp_path / 'c'))


def test_missing_path_is_named(tmp_path):
  missing = tmp_path / 'nowhere' / 'faces.zip'
  with pytest.raises(FileNotFoundError, match='nowhere'):
    builders.prepare_folder(str(missing), cache_dir=str(tmp_path / 'c'))
  text = tmp_path / 'faces.txt'
  text.write_text('x')
  with pytest.raises(ValueError, match='neither a folder nor a .zip'):
    builders.prepare_folder(str(text), cache_dir=str(tmp_path / 'c'))


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
  with pytest.raises(ValueError, match='batch_size 65'):
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
