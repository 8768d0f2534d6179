"""Progress pictures, loss curves, the memorization check and the report."""

import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dcgan import plots, report, sampling

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# Progress across training.


def test_select_steps_spreads_geometrically_and_keeps_the_last():
  assert plots.select_steps(range(0, 10001, 500)) == [
      500, 1000, 1500, 3000, 5500, 10000]
  assert plots.select_steps(range(0, 701, 100)) == [
      100, 200, 300, 400, 500, 700]
  # Few steps: all of them, step 0 included.
  assert plots.select_steps([6, 0, 3]) == [0, 3, 6]
  assert plots.select_steps([0, 1, 2, 3, 4, 5, 6], num=6) == [1, 2, 3, 4, 5, 6]
  assert len(plots.select_steps(range(0, 100001, 10), num=4)) == 4


def test_progress_strip_and_frames(tiny_workdir):
  steps = [step for step, _ in plots.sample_grids(tiny_workdir)]
  assert steps == [0, 3, 6]
  grid = np.asarray(Image.open(tiny_workdir / 'samples' / 'step_6.png'))
  strip = plots.progress_strip(tiny_workdir)
  caption = 14 + 6
  assert strip.shape == (caption + grid.shape[0],
                         3 * grid.shape[1] + 2 * 8, 3)
  # The last panel is the last grid, below its caption.
  np.testing.assert_array_equal(strip[caption:, -grid.shape[1]:], grid)
  frames = plots.progress_frames(tiny_workdir)
  assert len(frames) == 3 and frames[0].shape == (caption + grid.shape[0],
                                                  grid.shape[1], 3)


def test_sample_grids_of_an_empty_folder_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match='No samples/step_<N>.png'):
    plots.sample_grids(tmp_path)


# Loss curves.


def _record(step, **values):
  record = {'step': step, 'time': 0.0, 'd_loss': 1.0, 'd_loss_real': 0.5,
            'd_loss_fake': 0.5, 'g_loss': 2.0, 'd_real': 0.6, 'd_fake': 0.4,
            'd_grad_norm': 3.0, 'g_grad_norm': 4.0}
  record.update(values)
  return json.dumps(record)


def test_read_metrics_skips_events_and_keeps_the_last_of_a_step(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('\n'.join([
      _record(50, g_loss=1.0),
      json.dumps({'step': 60, 'event': 'nan_loss', 'message': 'x'}),
      _record(100, g_loss=2.0),
      _record(100, g_loss=3.0),  # logged again by a resumed run
      '',
      _record(75, g_loss=4.0),
      '{"step": 125, "d_lo',  # cut short by a crash
  ]) + '\n')
  metrics = plots.read_metrics(path)
  np.testing.assert_array_equal(metrics['step'], [50, 75, 100])
  np.testing.assert_array_equal(metrics['g_loss'], [1.0, 4.0, 3.0])
  assert 'event' not in metrics and 'd_grad_norm' in metrics
  path.write_text(json.dumps({'step': 1, 'event': 'start'}) + '\n')
  with pytest.raises(ValueError, match='No training metrics'):
    plots.read_metrics(path)
  with pytest.raises(FileNotFoundError):
    plots.read_metrics(tmp_path / 'missing.jsonl')


def test_plot_losses_writes_a_png(tiny_workdir, tmp_path):
  metrics = plots.read_metrics(tiny_workdir / 'metrics.jsonl')
  np.testing.assert_array_equal(metrics['step'], [2, 4, 6])
  path = plots.plot_losses(metrics, tmp_path / 'losses.png', title='tiny')
  image = np.asarray(Image.open(path).convert('RGB'))
  assert image.shape == (380, 1500, 3)  # 3 panels of 5 x 3.8 in at 100 dpi
  assert image.std() > 10  # curves drawn, not a blank canvas


# Nearest neighbours.


def test_nearest_neighbors_matches_brute_force():
  rng = np.random.default_rng(0)
  references = rng.normal(size=(300, 20)).astype(np.float32)
  queries = np.concatenate([references[[7, 123]],
                            rng.normal(size=(5, 20)).astype(np.float32)])
  indices, distances = report.nearest_neighbors(queries, references, k=4,
                                                chunk=3)
  brute = np.linalg.norm(queries[:, None] - references[None], axis=-1)
  np.testing.assert_array_equal(indices, np.argsort(brute, axis=1)[:, :4])
  np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :4],
                             rtol=1e-4, atol=1e-3)
  assert list(indices[:2, 0]) == [7, 123]
  with pytest.raises(ValueError, match='queries'):
    report.nearest_neighbors(queries, references[:, :3])


def test_discriminator_features_are_what_its_logit_reads(tiny_workdir):
  discriminator, variables, _, _ = sampling.load_discriminator(tiny_workdir)
  pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3),
                                             np.uint8)
  floats = report.pixel_embedding(pixels).reshape(pixels.shape)
  features = report._penultimate(discriminator, variables, floats)  # pylint: disable=protected-access
  # Tiny D: 32 -> 2x2 after four stride-2 layers, 8 * 8 features.
  assert features.shape == (3, 2 * 2 * 8 * 8)
  logit = variables['params']['logit']
  np.testing.assert_allclose(
      features @ logit['kernel'][:, 0] + logit['bias'][0],
      discriminator.apply(variables, jnp.asarray(floats), train=False),
      rtol=1e-4, atol=1e-5)
  embedded = report.discriminator_embedding(discriminator, variables,
                                            batch_size=2)(pixels)
  np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1.0,
                             rtol=1e-5)


def test_memorization_check_finds_copies():
  rng = np.random.default_rng(0)
  train = rng.integers(0, 256, (50, 8, 8, 3), np.uint8)
  held_out = rng.integers(0, 256, (10, 8, 8, 3), np.uint8)
  generated = train[[4, 40]]  # a G that copies
  check = report.memorization_check(generated, train, held_out,
                                    report.pixel_embedding, k=3)
  np.testing.assert_array_equal(check['indices'][:, 0], [4, 40])
  np.testing.assert_allclose(check['distances'][:, 0], 0.0, atol=1e-2)
  assert check['held_out_distances'].shape == (10,)
  assert check['held_out_distances'].min() > 1.0


def test_training_images_are_those_training_sees(tiny_workdir):
  from dcgan.data import pipeline  # pylint: disable=g-import-not-at-top
  config = sampling.load_generator(tiny_workdir).config
  train, held_out = report.load_training_images(config.data, 32, 1000, seed=0,
                                                num_held_out=100)
  # 64 images: held-out capped at a quarter, the rest searched.
  assert train.shape == (48, 32, 32, 3) and held_out.shape == (16, 32, 32, 3)
  together = np.concatenate([train, held_out]).reshape(64, -1)
  assert len(np.unique(together, axis=0)) == 64  # disjoint subsets
  # The very pixels of a training batch.
  batch = next(pipeline.create_train_iterator(
      config.data, image_size=32, batch_size=8, seed=0))
  for image in sampling.to_uint8(batch['image']).reshape(8, -1):
    assert np.any(np.all(together == image, axis=1))


# The report.


def test_write_report_writes_its_pictures(tiny_workdir, tmp_path):
  index = report.write_report(
      tiny_workdir, tmp_path / 'report', num_train_images=32, num_stats=16,
      num_queries=4, num_neighbors=3, embeddings=('pixel', 'discriminator'))
  out = tmp_path / 'report'
  names = sorted(p.name for p in out.iterdir())
  assert names == ['index.md', 'latent_walk.png', 'losses.png',
                   'neighbors_discriminator.png', 'neighbors_pixel.png',
                   'progress.gif', 'progress.png']
  text = pathlib.Path(index).read_text()
  for name in names[1:]:
    assert f'({name})' in text, name
  assert 'Checkpoint step 6' in text and '| pixel |' in text
  neighbors = np.asarray(Image.open(out / 'neighbors_pixel.png'))
  # 4 rows of 32x32 images and 1 + 3 columns, below a caption.
  assert neighbors.shape[0] == 20 + 4 * 34 + 2
  walk = np.asarray(Image.open(out / 'latent_walk.png'))
  assert walk.shape == (8 * 34 + 2, 10 * 34 + 2, 3)
  with Image.open(out / 'progress.gif') as gif:
    assert gif.n_frames == 3
  assert not (tiny_workdir / 'report').exists()


def _run(args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_report_cli(tiny_workdir, tmp_path):
  result = _run(['-m', 'experiments.report', '--workdir', str(tiny_workdir),
                 '--out', str(tmp_path / 'r'), '--num_train_images', '0'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(p.name for p in (tmp_path / 'r').iterdir()) == [
      'index.md', 'latent_walk.png', 'losses.png', 'progress.gif',
      'progress.png']
  assert 'Skipped (num_train_images = 0)' in (
      tmp_path / 'r' / 'index.md').read_text()

  result = _run(['-m', 'experiments.report', '--workdir',
                 str(tmp_path / 'nothing')])
  assert result.returncode != 0
  assert 'not a training workdir' in result.stderr
  assert 'Traceback' not in result.stderr

