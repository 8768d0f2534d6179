"""The training loop end to end on the tiny config: outputs, resume, signals."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dcgan import checkpointing, errors, models, sampling, train, validation
from dcgan import state as state_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _leaves_equal(a, b) -> bool:
  """Bitwise equality of two pytrees of arrays."""
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.asarray(x).dtype == np.asarray(y).dtype and
      np.asarray(x).tobytes() == np.asarray(y).tobytes()
      for x, y in zip(la, lb))


def test_run_writes_checkpoints_grids_metrics_and_config(tiny_config,
                                                         tmp_path):
  workdir = tmp_path / 'run'
  state = train.train_and_evaluate(tiny_config, workdir)
  assert int(state.step) == tiny_config.num_train_steps == 6

  saved_config = json.loads((workdir / 'config.json').read_text())
  assert saved_config['image_size'] == 32
  assert saved_config['data']['num_examples'] == 64

  # Kept: the last `keep_checkpoints` of the saves at steps 3 and 6.
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps == [3, 6]

  for step in (0, 3, 6):
    grid = np.asarray(Image.open(workdir / 'samples' / f'step_{step}.png'))
    # 16 images of 32x32 in a 4x4 grid with 2-pixel padding.
    assert grid.shape == (4 * 34 + 2, 4 * 34 + 2, 3)
  first = np.asarray(Image.open(workdir / 'samples' / 'step_0.png'))
  last = np.asarray(Image.open(workdir / 'samples' / 'step_6.png'))
  assert np.any(first != last)

  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == [2, 4, 6]
  for record in records:
    for key in ('d_loss', 'd_loss_real', 'd_loss_fake', 'g_loss', 'd_real',
                'd_fake', 'd_grad_norm', 'g_grad_norm', 'images_per_second'):
      assert np.isfinite(record[key]), key
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))


def test_resume_is_bitwise_equal_to_a_straight_run(tiny_config, tmp_path):
  straight = train.train_and_evaluate(tiny_config, tmp_path / 'straight')

  # Stop at step 4 (off the checkpoint interval: the last step is saved too),
  # then run the same command to the end.
  tiny_config.num_train_steps = 4
  train.train_and_evaluate(tiny_config, tmp_path / 'resumed')
  tiny_config.num_train_steps = 6
  resumed = train.train_and_evaluate(tiny_config, tmp_path / 'resumed')

  assert int(resumed.step) == 6
  assert _leaves_equal(straight, resumed)
  # Sanity: the check above can fail, e.g. against a different seed.
  tiny_config.seed = 1
  other = train.train_and_evaluate(tiny_config, tmp_path / 'other')
  assert not _leaves_equal(straight.g_params, other.g_params)


def test_learning_rate_scale_of_one_changes_no_bit(tiny_config):
  # The loop always passes a scale (the 'lower_learning_rate' remedy): at 1 it
  # must train exactly as the plain step.
  generator, discriminator = models.create_models(tiny_config.model,
                                                  tiny_config.image_size)
  g_tx, d_tx = state_lib.create_optimizers(tiny_config)
  step = train.make_train_step(tiny_config, generator, discriminator, g_tx,
                               d_tx)
  state = state_lib.create_state(tiny_config, generator, discriminator, g_tx,
                                 d_tx)
  rng = jax.random.wrap_key_data(state.rng)
  batch = {'image': jax.random.uniform(
      jax.random.key(1), (8, 32, 32, 3), minval=-1.0, maxval=1.0)}
  plain, _ = jax.jit(step)(state, batch, rng)
  scaled = jax.jit(step)
  same, _ = scaled(state, batch, rng, jnp.float32(1.0))
  half, _ = scaled(state, batch, rng, jnp.float32(0.5))
  assert _leaves_equal(plain, same)
  assert not _leaves_equal(plain.g_params, half.g_params)
  assert not _leaves_equal(plain.d_params, half.d_params)


def test_invalid_config_is_refused_before_anything_is_written(tiny_config,
                                                              tmp_path):
  tiny_config.image_size = 50
  with pytest.raises(validation.ConfigError,
                     match=r'config\.image_size = 50 is invalid: must be a '
                     r'multiple of 16'):
    train.train_and_evaluate(tiny_config, tmp_path / 'run')
  assert not (tmp_path / 'run').exists()


def test_a_workdir_that_is_a_file_is_refused(tiny_config, tmp_path):
  (tmp_path / 'run').write_text('kept')
  with pytest.raises(errors.RunError) as error:
    train.train_and_evaluate(tiny_config, tmp_path / 'run')
  assert str(error.value) == (f'The workdir {tmp_path / "run"} is a file: give '
                              "a folder, new or a run's, to train in.")
  assert (tmp_path / 'run').read_text() == 'kept'


def test_a_folder_smaller_than_a_batch_is_refused_naming_it(tiny_config,
                                                           tmp_path):
  folder = tmp_path / 'faces'
  folder.mkdir()
  for i in range(3):
    Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(
        folder / f'{i}.png')
  tiny_config.data.source, tiny_config.data.path = 'folder', str(folder)
  with pytest.raises(errors.ConfigError) as error:
    train.train_and_evaluate(tiny_config, tmp_path / 'run')
  assert str(error.value) == (
      f'config.batch_size = 8 is larger than the dataset (3 images in '
      f'{folder}): no full batch can be formed. Lower it '
      '(--config.batch_size) or add images.')


def _run(args, cwd=REPO_ROOT):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def _tiny_flags(tiny_config):
  return ['--config', str(REPO_ROOT / 'experiments/configs/tiny.py'),
          f'--config.data.cache_dir={tiny_config.data.cache_dir}']


def test_cli_trains_then_sample_cli_writes_pngs(tiny_config, tmp_path):
  # A relative workdir, as users type it.
  workdir = tmp_path / 'run'
  result = _run(['-m', 'experiments.avatar', '--workdir', 'run',
                 *_tiny_flags(tiny_config), '--config.num_train_steps=3'],
                cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (workdir / 'checkpoints' / '3').is_dir()

  out = tmp_path / 'out'
  result = _run(['-m', 'experiments.sample', '--workdir', 'run', '--num', '5',
                 '--out', 'out'], cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  pngs = sorted(p.name for p in out.glob('*.png'))
  assert pngs == ['0.png', '1.png', '2.png', '3.png', '4.png', 'grid.png']
  image = np.asarray(Image.open(out / '0.png'))
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  assert image.std() > 0

  # The library call gives the same pixels.
  generator, variables, config, step = sampling.load_generator(workdir)
  assert step == 3 and config.image_size == 32
  latents = sampling.sample_latents(jax.random.key(0), 5, config.latent_dim)
  pixels = sampling.to_uint8(generator.apply(variables, latents, train=False))
  np.testing.assert_array_equal(pixels[0], image)


def test_cli_rejects_bad_override_naming_the_key(tiny_config, tmp_path):
  result = _run(['-m', 'experiments.avatar', '--workdir',
                 str(tmp_path / 'run'), *_tiny_flags(tiny_config),
                 '--config.latent_dist=cauchy'])
  assert result.returncode != 0
  assert "config.latent_dist = 'cauchy' is invalid" in result.stderr
  assert 'Traceback' not in result.stderr
  assert "('uniform', 'normal')" in result.stderr


def test_sample_cli_without_checkpoint_says_what_to_do(tmp_path):
  result = _run(['-m', 'experiments.sample', '--workdir', str(tmp_path)])
  assert result.returncode != 0
  assert 'config.json' in result.stderr and str(tmp_path) in result.stderr
  assert 'Traceback' not in result.stderr


def test_sigterm_stops_after_the_step_with_a_checkpoint(tiny_config,
                                                        tmp_path):
  workdir = tmp_path / 'run'
  args = ['-m', 'experiments.avatar', '--workdir', str(workdir),
          *_tiny_flags(tiny_config), '--config.num_train_steps=100000',
          '--config.checkpoint_every_steps=100000',
          '--config.sample_every_steps=100000']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  process = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  try:
    # Wait for training to be under way (the first grid is written at start).
    deadline = time.time() + 240
    while not (workdir / 'samples' / 'step_0.png').exists():
      assert process.poll() is None, process.stderr.read()[-3000:]
      assert time.time() < deadline, 'training did not start'
      time.sleep(0.2)
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 0, stderr[-3000:]
  assert 'SIGTERM received' in stderr
  saved = [int(p.name) for p in (workdir / 'checkpoints').iterdir()
           if p.name.isdigit()]
  assert len(saved) == 1 and saved[0] >= 1
  assert f'Stopped by SIGTERM at step {saved[0]}' in stderr
  events = [json.loads(line) for line in
            (workdir / 'metrics.jsonl').read_text().splitlines()
            if '"event"' in line]
  assert [(e['event'], e['step'], e['signal']) for e in events] == [
      ('stopped', saved[0], 'SIGTERM')]


def _start_cli(workdir, tiny_config, *overrides):
  args = ['-m', 'experiments.avatar', '--workdir', str(workdir),
          *_tiny_flags(tiny_config), '--config.num_train_steps=100000',
          '--config.sample_every_steps=100000', *overrides]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def test_second_signal_raises_at_once_and_restores_the_handlers():
  previous = signal.getsignal(signal.SIGINT)
  with train._StopOnSignal() as stop:
    assert signal.getsignal(signal.SIGTERM) == stop._handle
    signal.raise_signal(signal.SIGTERM)
    assert stop.requested == 'SIGTERM'
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
    # The second signal went to the handler there was before, at once.
    assert signal.getsignal(signal.SIGINT) is previous
    assert signal.getsignal(signal.SIGTERM) != stop._handle
  assert signal.getsignal(signal.SIGINT) is previous


def test_second_signal_stops_at_once_and_spares_the_checkpoints(tiny_config,
                                                                tmp_path):
  # A checkpoint every step, so that the second signal lands while a step is
  # finishing: in its sample grid or its checkpoint write.
  workdir = tmp_path / 'run'
  process = _start_cli(workdir, tiny_config,
                       '--config.checkpoint_every_steps=1',
                       '--config.keep_checkpoints=3')
  try:
    deadline = time.time() + 240
    while not (workdir / 'checkpoints' / '3').exists():
      assert process.poll() is None, process.stderr.read()[-3000:]
      assert time.time() < deadline, 'training did not start'
      time.sleep(0.05)
    # Two signals back to back (SIGINT's handler runs first when both are
    # pending): SIGTERM, the second, goes to its default action and ends the
    # process wherever it is.
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGTERM)
    start = time.time()
    _, stderr = process.communicate(timeout=60)
    assert time.time() - start < 10
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == -signal.SIGTERM, stderr[-3000:]
  assert 'SIGINT received' in stderr
  # Every checkpoint left is whole: its manifest verifies and it restores.
  directory = workdir / 'checkpoints'
  steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
  assert steps and not (directory / 'damaged').exists()
  for step in steps:
    assert checkpointing.verify_manifest(directory / str(step))[0] is not False
  tiny_config.num_train_steps = steps[-1] + 1
  state = train.train_and_evaluate(tiny_config, workdir)
  assert int(state.step) == steps[-1] + 1
  events = [json.loads(line) for line in
            (workdir / 'metrics.jsonl').read_text().splitlines()
            if '"event"' in line]
  assert [e['event'] for e in events] == ['resumed']
  assert events[0]['step'] == steps[-1]


def test_killed_anywhere_resumes_to_the_same_bits(tiny_config, tmp_path):
  """A short run of benchmarks/kill_anywhere.py: one kill of each kind."""
  result = _run(['benchmarks/kill_anywhere.py', '--steps', '30', '--trials',
                 '3', '--checkpoint_every', '5', '--seed', '1', '--workdir',
                 str(tmp_path / 'runs'),
                 '--cache_dir', tiny_config.data.cache_dir, '--timeout', '240'])
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  out = result.stdout
  assert 'ok   3/3 launches killed' in out
  assert 'kills during a checkpoint write: 1' in out
  assert 'bitwise equal' in out and out.rstrip().endswith('PASS')
