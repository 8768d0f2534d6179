"""Checkpoints of a run: the GAN state, the config and the data iterator.

The only module that imports orbax. A checkpoint of step N holds four items:
'state' (the whole `GANState`), 'config' (the resolved config as JSON), 'data'
(the grain iterator's position) and 'health' (what the run did about its
health, `health.Record`), so a restart continues exactly where the checkpoint
left off.

Damage. Orbax writes a checkpoint into a temporary folder and renames it when
complete, so a process killed mid-save leaves no half checkpoint (the
temporary folder is removed at the next start). Damage done later (a
truncated or corrupted file) is caught by a manifest written after orbax
finishes: `<step>/integrity.json` lists every file's size and SHA-256.
`restore_latest_good` checks it, tries the newest checkpoint first and falls
back step by step; a damaged checkpoint is never deleted but moved to
`<directory>/damaged/<step>`, out of the manager's sight, so the keep-N
policy cannot delete a good checkpoint to make room for damaged ones.

The functions take a manager, so a second one (e.g. for a 'best' checkpoint in
another folder) works the same way.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
from typing import Any, Callable

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from dcgan import errors
from dcgan import state as state_lib

preservation = ocp.checkpoint_managers.preservation_policy

MANIFEST_NAME = 'integrity.json'
DAMAGED_DIR = 'damaged'
_TMP_MARKER = '.orbax-checkpoint-tmp'


class SaveError(errors.RunError):
  """A checkpoint could not be written; the previous ones are untouched."""


class NoUsableCheckpointError(errors.RunError):
  """Checkpoints exist but none of them can be restored."""


def create_manager(directory: epath.PathLike, *, keep: int
                   ) -> ocp.CheckpointManager:
  """A manager that keeps the latest `keep` checkpoints in `directory`.

  The training loop decides when to save (every N steps, at the end, on a
  signal) and saves with `force=True`.
  """
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation.LatestN(keep),
      enable_async_checkpointing=False,
      # A save cut short leaves a '<step>.orbax-checkpoint-tmp' folder:
      # never a checkpoint, so removed at start.
      cleanup_tmp_directories=True,
      create=True)
  return ocp.CheckpointManager(
      epath.Path(directory).resolve(),
      options=options,
      item_handlers={
          'state': ocp.StandardCheckpointHandler(),
          'config': ocp.JsonCheckpointHandler(),
          'data': grain.checkpoint.CheckpointHandler(),
          'health': ocp.JsonCheckpointHandler(),
      })


def step_dir(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  """The folder of one checkpoint (orbax's default naming: the step)."""
  return manager.directory / str(step)


# ------------------------------------------------------------------ saving


def save(manager: ocp.CheckpointManager, state: state_lib.GANState,
         config_dict: dict[str, Any], data_iterator=None,
         health_record: dict[str, Any] | None = None) -> None:
  """Saves a checkpoint at `state.step` (blocking), then its manifest.

  Raises:
    SaveError: orbax could not write it (a full disk, say). What it left
      half-written is removed; earlier checkpoints are untouched.
  """
  step = int(jax.device_get(state.step))
  items = {
      'state': ocp.args.StandardSave(state),
      'config': ocp.args.JsonSave(config_dict),
  }
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
  if health_record is not None:
    items['health'] = ocp.args.JsonSave(health_record)
  _remove_partial_saves(manager.directory)  # of earlier failed saves
  try:
    manager.save(step, args=ocp.args.Composite(**items), force=True)
    manager.wait_until_finished()
  except Exception as e:  # orbax and tensorstore wrap OS errors variously
    _remove_partial_saves(manager.directory)
    manager.reload()
    raise SaveError(
        f'Could not write the checkpoint of step {step} in '
        f'{manager.directory}: {_os_error(e)}({type(e).__name__}: '
        f'{_first_line(e)})') from e
  try:
    write_manifest(step_dir(manager, step))
  except OSError as e:
    # The checkpoint itself is complete; it is only unverifiable.
    logging.warning('Could not write the manifest of checkpoint %d (%s); it '
                    'will be restored without a check.', step, e)


def _remove_partial_saves(directory: epath.Path, tries: int = 20) -> None:
  """Removes `<step>.orbax-checkpoint-tmp*` folders: never a checkpoint.

  After a failed save some of its writes may still be in flight and recreate
  files, hence the retries; whatever is left goes at the next save or start.
  """
  for attempt in range(tries):
    left = list(directory.glob(f'*{_TMP_MARKER}*'))
    if not left:
      return
    if attempt:
      time.sleep(0.05)
    for path in left:
      shutil.rmtree(path, ignore_errors=True)


def _os_error(error: BaseException) -> str:
  """'No space left on device. ' and the like, when the error says so."""
  cause = error
  while cause is not None:
    if isinstance(cause, OSError) and cause.errno:
      return f'{os.strerror(cause.errno)}. '
    cause = cause.__cause__ or cause.__context__
  # tensorstore reports the OS error inside its message.
  match = re.search(r"os_error_code='?(\d+)", str(error))
  return f'{os.strerror(int(match.group(1)))}. ' if match else ''


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else ''


# --------------------------------------------------------------- integrity


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 22):
      digest.update(chunk)
  return digest.hexdigest()


def _files(directory: str) -> dict[str, str]:
  """Relative path -> full path of every file under `directory`."""
  found = {}
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      found[os.path.relpath(full, directory)] = full
  return found


def write_manifest(directory: epath.PathLike) -> None:
  """Writes `<directory>/integrity.json`: each file's size and SHA-256.

  Written to a temporary name and renamed, so it is whole or absent.
  """
  directory = os.fspath(directory)
  entries = {rel: {'size': os.path.getsize(full), 'sha256': _sha256(full)}
             for rel, full in _files(directory).items()
             if not rel.startswith(MANIFEST_NAME)}
  path = os.path.join(directory, MANIFEST_NAME)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump({'version': 1, 'files': entries}, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + '.tmp', path)


def verify_manifest(directory: epath.PathLike) -> tuple[bool | None, str]:
  """Checks a checkpoint folder against its manifest.

  Returns:
    (True, '') when every listed file has its size and checksum; (False, what
    is wrong) when one does not or the manifest is unreadable; (None, why)
    when there is no manifest (a checkpoint saved before manifests existed,
    or one whose save was cut short after orbax finished).
  """
  directory = os.fspath(directory)
  path = os.path.join(directory, MANIFEST_NAME)
  if not os.path.exists(path):
    return None, 'no manifest'
  try:
    with open(path, encoding='utf-8') as f:
      entries = json.load(f)['files']
  except (OSError, ValueError, KeyError, TypeError) as e:
    return False, f'its manifest {MANIFEST_NAME} is unreadable ({e})'
  for rel, expected in sorted(entries.items()):
    full = os.path.join(directory, rel)
    if not os.path.isfile(full):
      return False, f'{rel} is missing'
    size = os.path.getsize(full)
    if size != expected['size']:
      return False, f'{rel} has {size} bytes, {expected["size"]} expected'
    if _sha256(full) != expected['sha256']:
      return False, f'{rel} does not match its checksum'
  return True, ''


def move_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  """Moves a damaged checkpoint to `<directory>/damaged/<step>[.n]`.

  Nothing is deleted: the files stay for inspection or manual rescue.
  """
  target_dir = manager.directory / DAMAGED_DIR
  target_dir.mkdir(parents=True, exist_ok=True)
  target, n = target_dir / str(step), 1
  while target.exists():
    target, n = target_dir / f'{step}.{n}', n + 1
  os.replace(step_dir(manager, step), target)
  manager.reload()
  return target


# --------------------------------------------------------------- restoring


def restore(manager: ocp.CheckpointManager, abstract_state: state_lib.GANState,
            data_iterator=None, step: int | None = None
            ) -> tuple[state_lib.GANState, dict[str, Any]] | None:
  """Restores the state and its config (and the iterator's position, in place).

  No integrity check or fallback: see `restore_latest_good` for that.

  Args:
    manager: from `create_manager`.
    abstract_state: a `GANState` of arrays or `jax.ShapeDtypeStruct`s giving
      the structure, shapes, dtypes and shardings to restore into.
    data_iterator: a grain iterator whose position is restored, if given.
    step: the step to restore; the latest one if None.

  Returns:
    (state, config dict saved with it), or None where there is no checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  restored = _restore_step(manager, step, abstract_state, data_iterator)
  return restored.state, restored.config


def saved_config(manager: ocp.CheckpointManager,
                 step: int) -> dict[str, Any] | None:
  """The config saved with checkpoint `step`; None where it cannot be read.

  Reads the small JSON item alone, none of the state.
  """
  try:
    return manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))['config']
  except Exception:  # pylint: disable=broad-exception-caught
    return None  # restoring the whole checkpoint will say what is wrong


@dataclasses.dataclass
class Restored:
  """One restored checkpoint.

  Attributes:
    step: its step.
    state: the `GANState`.
    config: the config dict saved with it.
    health: its `health.Record` as a dict; None for a checkpoint without one.
    skipped: newer checkpoints found damaged and moved aside, as
      {'step', 'reason', 'moved_to'} dicts.
  """
  step: int
  state: state_lib.GANState
  config: dict[str, Any]
  health: dict[str, Any] | None = None
  skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _restore_step(manager, step, abstract_state, data_iterator) -> Restored:
  abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                abstract_state)
  items = {'state': ocp.args.StandardRestore(abstract_state),
           'config': ocp.args.JsonRestore()}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
  has_health = (step_dir(manager, step) / 'health').is_dir()
  if has_health:
    items['health'] = ocp.args.JsonRestore()
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  logging.info('Restored checkpoint of step %d from %s', step,
               manager.directory)
  return Restored(step, restored['state'], restored['config'],
                  restored['health'] if has_health else None)


def restore_latest_good(
    manager: ocp.CheckpointManager, abstract_state: state_lib.GANState,
    data_iterator=None, *, accept: Callable[[int], bool] = lambda step: True,
    check_state: Callable[[state_lib.GANState], bool] | None = None,
) -> Restored | None:
  """Restores the newest intact checkpoint, moving damaged newer ones aside.

  Newest first, each candidate is checked against its manifest, restored,
  and (if `check_state` is given) checked; the first that passes is returned.
  Candidates that failed are moved to `<directory>/damaged/` only once an
  older one has restored: if none restores, nothing is moved (a changed model
  config, for instance, fails them all and is not damage).

  Args:
    manager: from `create_manager`.
    abstract_state: as for `restore`.
    data_iterator: a grain iterator whose position is restored, if given.
    accept: which steps are candidates (the others are left alone).
    check_state: e.g. "every number is finite"; a state that fails it counts
      as damaged.

  Returns:
    The restored checkpoint, or None where there is no candidate.

  Raises:
    NoUsableCheckpointError: there are candidates and none restores.
  """
  failed = []
  for step in sorted(manager.all_steps(), reverse=True):
    if not accept(step):
      continue
    ok, why = verify_manifest(step_dir(manager, step))
    if ok is False:
      failed.append((step, why))
      continue
    try:
      restored = _restore_step(manager, step, abstract_state, data_iterator)
    except Exception as e:  # any read or decode error: try an older one
      failed.append((step, f'cannot be read: {type(e).__name__}: '
                           f'{_first_line(e)}'))
      continue
    if check_state is not None and not check_state(restored.state):
      failed.append((step, 'holds non-finite numbers'))
      continue
    for bad_step, reason in failed:
      moved = move_aside(manager, bad_step)
      logging.warning(
          'Checkpoint %d in %s is damaged (%s): skipped it and moved it to %s; '
          'using checkpoint %d instead.', bad_step, manager.directory, reason,
          moved, step)
      restored.skipped.append({'step': bad_step, 'reason': reason,
                               'moved_to': os.fspath(moved)})
    return restored
  if failed:
    listed = '; '.join(f'step {s}: {why}' for s, why in failed)
    raise NoUsableCheckpointError(
        f'No checkpoint in {manager.directory} can be restored ({listed}). '
        'Nothing was moved or deleted. If the config changed since they were '
        'written (model sizes, say), run with the config saved in the workdir '
        '(config.json) or use another --workdir; to start over here, move the '
        'checkpoints folder aside.')
  return None


_READ_ONLY_NOTICE = 'Given directory is read only'


@contextlib.contextmanager
def _without_warning(prefix: str):
  """Drops log records (absl's, which orbax uses) that start with `prefix`."""
  def keep(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(prefix)
  absl_logger = logging.getLogger('absl')
  absl_logger.addFilter(keep)
  try:
    yield
  finally:
    absl_logger.removeFilter(keep)


def restore_variables(directory: epath.PathLike, make_abstract,
                      step: int | None = None):
  """Reads a checkpoint's config, then only the parts of the state it needs.

  For inference (sampling, evaluation): no optimizer state, no data iterator.
  The config comes first because the shapes of the parts depend on it.

  Args:
    directory: a run's `checkpoints/` folder.
    make_abstract: config dict -> {field: subtree} for some `GANState` fields,
      e.g. {'d_params': ..., 'd_batch_stats': ...}, of arrays or
      `jax.ShapeDtypeStruct`s.
    step: the step to read; the latest if None.

  Returns:
    (variables, config dict, step): the restored fields, the config saved
    with them and the step read.

  Raises:
    FileNotFoundError: no checkpoint (of `step`) in `directory`.
  """
  # Read-only, so that reading never tidies (deletes) anything of a run that
  # may be training; orbax warns that it is on every open, which is noise
  # here: every sample, evaluation and report opens one.
  with _without_warning(_READ_ONLY_NOTICE):
    manager = ocp.CheckpointManager(
        epath.Path(directory).resolve(),
        options=ocp.CheckpointManagerOptions(
            read_only=True, create=False, save_interval_steps=0),
        item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                       'config': ocp.JsonCheckpointHandler()})
  try:
    steps = sorted(manager.all_steps())
    if not steps:
      raise FileNotFoundError(
          f'No checkpoint in {directory}: train first with '
          '`python -m experiments.avatar --workdir <workdir>`.')
    step = steps[-1] if step is None else step
    if step not in steps:
      raise FileNotFoundError(f'No checkpoint of step {step} in {directory}; '
                              f'it has steps {steps}.')
    config_dict = manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))['config']
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            make_abstract(config_dict))
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            abstract,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=True)))
  finally:
    manager.close()
  return restored['state'], config_dict, step
