"""Checkpoints of a run: the GAN state, the config and the data iterator.

The only module that imports orbax. A checkpoint of step N holds three items:
'state' (the whole `GANState`), 'config' (the resolved config as JSON) and
'data' (the grain iterator's position), so a restart continues exactly where
the checkpoint left off.
"""

import logging
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from dcgan import state as state_lib

preservation = ocp.checkpoint_managers.preservation_policy


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
      })


def save(manager: ocp.CheckpointManager, state: state_lib.GANState,
         config_dict: dict[str, Any], data_iterator=None) -> None:
  """Saves a checkpoint at `state.step` (blocking)."""
  step = int(jax.device_get(state.step))
  items = {
      'state': ocp.args.StandardSave(state),
      'config': ocp.args.JsonSave(config_dict),
  }
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**items), force=True)
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, abstract_state: state_lib.GANState,
            data_iterator=None, step: int | None = None
            ) -> tuple[state_lib.GANState, dict[str, Any]] | None:
  """Restores the state and its config (and the iterator's position, in place).

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
  abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                abstract_state)
  items = {'state': ocp.args.StandardRestore(abstract_state),
           'config': ocp.args.JsonRestore()}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  logging.info('Restored checkpoint of step %d from %s', step,
               manager.directory)
  return restored['state'], restored['config']


def restore_generator_variables(directory: epath.PathLike, abstract_variables,
                                step: int | None = None):
  """Reads only G's parameters and BatchNorm averages from a checkpoint.

  Args:
    directory: a run's `checkpoints/` folder.
    abstract_variables: {'g_params': ..., 'g_batch_stats': ...} of arrays or
      `jax.ShapeDtypeStruct`s.
    step: the step to read; the latest if None.

  Returns:
    (variables, step): the restored dict and the step it was read from.

  Raises:
    FileNotFoundError: no checkpoint in `directory`.
  """
  manager = ocp.CheckpointManager(
      epath.Path(directory).resolve(),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_handlers={'state': ocp.PyTreeCheckpointHandler()})
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(
        f'No checkpoint in {directory}: train first with '
        '`python -m experiments.avatar --workdir <workdir>`.')
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_variables)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
          abstract,
          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
          partial_restore=True)))
  manager.close()
  return restored['state'], step
