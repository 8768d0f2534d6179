"""Checkpoints: manifests, damaged checkpoints set aside, failed saves."""

import copy
import json
import logging
import os
import pathlib
import resource
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcgan import checkpointing, errors, health, train
from dcgan import state as state_lib
from dcgan.data import pipeline
from experiments.configs import tiny


def _leaves_equal(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.asarray(x).tobytes() == np.asarray(y).tobytes()
      for x, y in zip(la, lb))


def _config(cache_dir):
  config = tiny.get_config()
  config.data.cache_dir = str(cache_dir)
  return config


def _data_iterator(config, skip=0):
  iterator = pipeline.create_train_iterator(
      config.data, image_size=config.image_size,
      batch_size=config.batch_size, seed=config.seed)
  for _ in range(skip):
    next(iterator)
  return iterator


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished tiny run (checkpoints 3 and 6) and its final state."""
  root = tmp_path_factory.mktemp('trained')
  config = _config(root / 'data_cache')
  final = jax.device_get(train.train_and_evaluate(config, root / 'run'))
  return config, root / 'run', final


@pytest.fixture
def run_copy(trained, tmp_path):
  """A copy of the finished run to damage."""
  config, workdir, final = trained
  shutil.copytree(workdir, tmp_path / 'run')
  return copy.deepcopy(config), tmp_path / 'run', final


def _largest_state_file(step_dir: pathlib.Path) -> pathlib.Path:
  return max((p for p in (step_dir / 'state').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


def _truncate(path: pathlib.Path) -> None:
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _flip_a_byte(path: pathlib.Path) -> None:
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))


def _files(directory: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(directory)): p.read_bytes()
          for p in sorted(directory.rglob('*')) if p.is_file()}


def test_manifest_lists_every_file_and_verifies(trained):
  _, workdir, _ = trained
  step_dir = workdir / 'checkpoints' / '6'
  manifest = json.loads((step_dir / checkpointing.MANIFEST_NAME).read_text())
  listed = set(manifest['files'])
  assert listed == set(_files(step_dir)) - {checkpointing.MANIFEST_NAME}
  assert {'state/_METADATA', 'config/metadata', 'health/metadata'} <= listed
  assert checkpointing.verify_manifest(step_dir) == (True, '')


# (name, how to damage checkpoint 6, what the warning says)
DAMAGE = [
    ('truncated', lambda d: _truncate(_largest_state_file(d)),
     'bytes, '),
    # A flipped byte in raw array data: orbax alone restores it silently.
    ('flipped_byte', lambda d: _flip_a_byte(_largest_state_file(d)),
     'does not match its checksum'),
    ('file_missing', lambda d: (d / 'state' / '_METADATA').unlink(),
     'state/_METADATA is missing'),
    ('garbled_manifest', lambda d: (d / checkpointing.MANIFEST_NAME
                                    ).write_text('{"files": {'),
     'manifest integrity.json is unreadable'),
    # Without a manifest (an older checkpoint): orbax's read fails.
    ('truncated_unlisted', lambda d: (
        (d / checkpointing.MANIFEST_NAME).unlink(),
        _truncate(_largest_state_file(d))), 'cannot be read'),
    ('garbled_data_position', lambda d: (
        (d / checkpointing.MANIFEST_NAME).unlink(),
        (d / 'data' / 'process_0-of-1.json').write_text('{"next_')),
     'cannot be read: JSONDecodeError'),
]


@pytest.mark.parametrize('name, damage, reason', DAMAGE,
                         ids=[d[0] for d in DAMAGE])
def test_damaged_newest_is_moved_aside_and_older_restored(
    name, damage, reason, run_copy, caplog):
  del name
  config, workdir, _ = run_copy
  directory = workdir / 'checkpoints'
  damage(directory / '6')
  damaged_files = _files(directory / '6')
  manager = checkpointing.create_manager(directory, keep=2)
  caplog.set_level(logging.WARNING)
  iterator = _data_iterator(config)
  restored = checkpointing.restore_latest_good(
      manager, state_lib.abstract_state(config), iterator)
  assert restored.step == 3 and int(restored.state.step) == 3
  assert iterator.get_state() == _data_iterator(config, skip=3).get_state()
  assert manager.all_steps() == [3]
  [skipped] = restored.skipped
  assert skipped['step'] == 6 and reason in skipped['reason']
  # Moved, not deleted: every file is still there, byte for byte.
  assert skipped['moved_to'] == str(directory / 'damaged' / '6')
  assert _files(directory / 'damaged' / '6') == damaged_files
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and 'damaged' in r.getMessage()]
  assert len(warnings) == 1
  assert f'Checkpoint 6 in {directory} is damaged (' in warnings[0]
  assert reason in warnings[0]
  assert 'using checkpoint 3 instead' in warnings[0]
  manager.close()


def test_a_flipped_byte_goes_unnoticed_without_the_manifest(run_copy):
  # Why the manifest exists: orbax reads raw float32 arrays as they are.
  config, workdir, final = run_copy
  _flip_a_byte(_largest_state_file(workdir / 'checkpoints' / '6'))
  manager = checkpointing.create_manager(workdir / 'checkpoints', keep=2)
  state, _ = checkpointing.restore(manager, state_lib.abstract_state(config),
                                  step=6)
  manager.close()
  assert not _leaves_equal(state, final)


def test_training_resumes_from_the_last_good_one_and_keeps_it(run_copy):
  config, workdir, final = run_copy
  directory = workdir / 'checkpoints'
  _truncate(_largest_state_file(directory / '6'))
  resumed = train.train_and_evaluate(config, workdir)
  # Steps 4-6 again from checkpoint 3: the very same bits.
  assert _leaves_equal(jax.device_get(resumed), final)
  events = [json.loads(line) for line in
            (workdir / 'metrics.jsonl').read_text().splitlines()
            if '"event"' in line]
  assert [(e['event'], e['step']) for e in events] == [
      ('damaged_checkpoint', 3), ('resumed', 3)]
  assert ' expected' in events[0]['reason']
  assert events[0]['moved_to'] == str(directory / 'damaged' / '6')
  # The keep-2 policy counts good checkpoints only, and never deletes the
  # damaged one.
  config.num_train_steps = 9
  train.train_and_evaluate(config, workdir)
  assert sorted(p.name for p in directory.iterdir()) == ['6', '9', 'damaged']
  assert (directory / 'damaged' / '6' / 'state').is_dir()


def test_nothing_is_moved_when_no_checkpoint_restores(run_copy):
  config, workdir, _ = run_copy
  directory = workdir / 'checkpoints'
  for step in ('3', '6'):
    _flip_a_byte(_largest_state_file(directory / step))
  manager = checkpointing.create_manager(directory, keep=2)
  with pytest.raises(checkpointing.NoUsableCheckpointError) as error:
    checkpointing.restore_latest_good(manager, state_lib.abstract_state(config))
  assert 'step 6: ' in str(error.value) and 'step 3: ' in str(error.value)
  assert 'Nothing was moved or deleted' in str(error.value)
  assert manager.all_steps() == [3, 6]
  assert not (directory / 'damaged').exists()
  manager.close()


def test_a_changed_model_is_not_taken_for_damage(run_copy):
  config, workdir, _ = run_copy
  config.model.g_base_features = 16  # other shapes than the checkpoints'
  manager = checkpointing.create_manager(workdir / 'checkpoints', keep=2)
  with pytest.raises(checkpointing.NoUsableCheckpointError,
                     match='If the config changed since they were written'):
    checkpointing.restore_latest_good(manager, state_lib.abstract_state(config))
  assert manager.all_steps() == [3, 6]
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == [
      '3', '6']
  manager.close()


def test_resuming_with_other_shapes_names_the_config_values(run_copy):
  config, workdir, _ = run_copy
  before = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
  config.model.g_base_features = 16  # other shapes than the checkpoints'
  config.num_train_steps = 9  # may change: not named
  config.log_every_steps = 3  # neither
  with pytest.raises(errors.RunError) as error:
    train.train_and_evaluate(config, workdir)
  assert str(error.value) == (
      f'The checkpoints in {workdir} hold a model of other shapes than this '
      "config gives (state.g_params['bn0']['bias'] is (128,) float32 here and "
      '(64,) float32 there; checkpoint 6). This config differs from theirs '
      'in: config.model.g_base_features = 16 (theirs: 8). Resume with their '
      'values, or train in another --workdir. Nothing in the workdir was '
      'changed.')
  # Not a byte written: config.json still describes the checkpoints.
  after = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
  assert after == before


def test_a_non_finite_checkpoint_is_not_restored(run_copy):
  config, workdir, _ = run_copy
  manager = checkpointing.create_manager(workdir / 'checkpoints', keep=3)
  state, config_dict = checkpointing.restore(
      manager, state_lib.abstract_state(config))
  bad = state.replace(step=state.step + 1, g_params=jax.tree.map(
      lambda x: jnp.full_like(x, jnp.nan), state.g_params))
  checkpointing.save(manager, bad, config_dict)  # as an older version might
  restored = checkpointing.restore_latest_good(
      manager, state_lib.abstract_state(config),
      check_state=lambda s: bool(health.is_finite(s)))
  assert restored.step == 6
  assert restored.skipped[0]['step'] == 7
  assert restored.skipped[0]['reason'] == 'holds non-finite numbers'
  manager.close()


@pytest.fixture
def file_size_limit():
  """Caps the size of files this process writes (EFBIG beyond it).

  A real failed write, as a full disk gives, without filling a disk: orbax
  and tensorstore see the OS error themselves. Python ignores SIGXFSZ, so the
  write returns the error instead of killing the process.
  """
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  def limit(num_bytes):
    resource.setrlimit(resource.RLIMIT_FSIZE, (num_bytes, hard))
  yield limit
  resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_failed_saves_keep_the_last_checkpoint(run_copy, file_size_limit):
  config, workdir, _ = run_copy
  directory = workdir / 'checkpoints'
  kept = _files(directory / '6')
  config.num_train_steps = 12
  # The state's 1.7 MB go into one or two data files: they cannot be written;
  # the other files of a run (metrics, grids, orbax metadata) stay smaller.
  file_size_limit(256 << 10)
  with pytest.raises(checkpointing.SaveError) as error:
    train.train_and_evaluate(config, workdir)
  file_size_limit(resource.RLIM_INFINITY)
  message = str(error.value)
  assert 'Could not write the checkpoint of step 12' in message
  assert 'File too large' in message
  assert 'the latest checkpoint is step 6' in message
  # The save at 9 failed too and training went on to 12; nothing half
  # written is left, and checkpoint 6 is untouched.
  assert sorted(os.listdir(directory)) == ['3', '6']
  assert _files(directory / '6') == kept
  events = [json.loads(line) for line in
            (workdir / 'metrics.jsonl').read_text().splitlines()
            if '"checkpoint_failed"' in line]
  assert [(e['step'], e['latest_checkpoint']) for e in events] == [
      (9, 6), (12, 6)]
  # With space again, the same command resumes from 6.
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 12
  assert sorted(os.listdir(directory)) == ['12', '9']
