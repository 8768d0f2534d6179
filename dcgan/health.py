"""Training health: non-finite numbers and discriminator collapse.

Watching costs no host sync per step: `update_monitor` runs inside the jitted
step and folds each step's metrics into a few device scalars (the first step
with a non-finite loss or gradient norm, the length of the current collapse
streak); the loop reads them only where it syncs anyway (logging, samples,
checkpoints).

When something is wrong the loop rolls back to the last scheduled checkpoint
and goes on with a remedy (`config.health.remedy`): a lower learning rate, or
skipping some batches. What a run has done so far (`Record`) is saved with
every checkpoint, so a resumed run applies the same remedies and stays
bit-exact.

`config.health` (see `get_default_health_config`):
  max_rollbacks: rollbacks allowed in a run; one more stops it (DivergedError).
  remedy: 'lower_learning_rate' (both rates times `learning_rate_factor` per
    rollback) or 'skip_batches' (`skip_batches` more batches per rollback are
    skipped after the restored position).
  collapse_window, collapse_d_loss, collapse_d_fake: D has collapsed when its
    loss is below `collapse_d_loss` and D(G(z)) below `collapse_d_fake` for
    `collapse_window` steps in a row (0 turns the detector off).
  collapse_action: 'warn' (a warning and a metrics.jsonl event) or 'rollback'.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from dcgan import errors

REMEDIES = ('lower_learning_rate', 'skip_batches')
COLLAPSE_ACTIONS = ('warn', 'rollback')

Monitor = dict[str, jnp.ndarray]


class DivergedError(errors.RunError):
  """The run kept going wrong after `max_rollbacks` rollbacks."""


def get_default_health_config() -> ml_collections.ConfigDict:
  """Defaults of `config.health` (see the module docstring)."""
  config = ml_collections.ConfigDict()
  config.max_rollbacks = 3
  config.remedy = 'lower_learning_rate'
  config.learning_rate_factor = 0.5
  config.skip_batches = 10
  config.collapse_window = 200  # steps
  config.collapse_d_loss = 0.05
  config.collapse_d_fake = 0.05
  config.collapse_action = 'warn'
  return config


def get_default_debug_config() -> ml_collections.ConfigDict:
  """Defaults of `config.debug`: fault injection for tests, off by default.

  nan_at_step: > 0 turns the real images of that step (the one that ends at
    `step == nan_at_step`) into NaN, which makes every loss, gradient and
    parameter non-finite.
  nan_attempts: the NaN is injected while fewer than this many rollbacks have
    happened, so a run can be seen to recover (or, with more attempts than
    `health.max_rollbacks`, to stop).
  """
  config = ml_collections.ConfigDict()
  config.nan_at_step = 0
  config.nan_attempts = 1
  return config


# ------------------------------------------------------------ device side


def init_monitor(collapse_streak: int = 0) -> Monitor:
  """A fresh monitor (int32 scalars): nothing wrong seen yet."""
  return {
      'nonfinite_step': jnp.array(-1, jnp.int32),
      'collapse_streak': jnp.array(collapse_streak, jnp.int32),
      'collapse_step': jnp.array(-1, jnp.int32),
  }


def monitor_settings(config) -> dict[str, jnp.ndarray]:
  """The collapse detector's settings from `config.health`, as arrays.

  Passed to `update_monitor` as arguments rather than baked into the
  compiled step, so that changing them recompiles nothing.
  """
  return {'collapse_window': jnp.int32(config.collapse_window),
          'collapse_d_loss': jnp.float32(config.collapse_d_loss),
          'collapse_d_fake': jnp.float32(config.collapse_d_fake)}


def update_monitor(monitor: Monitor, metrics: dict[str, jnp.ndarray],
                   step: jnp.ndarray, settings) -> Monitor:
  """Folds one step's metrics into the monitor (jittable, no host sync).

  Args:
    monitor: from `init_monitor` or a previous call.
    metrics: the step's scalar metrics; all of them (losses, D outputs,
      gradient norms) must be finite. A gradient norm is finite exactly when
      every gradient entry is.
    step: int32, the step number after this step.
    settings: `monitor_settings(config.health)` (extra keys are ignored).

  Returns:
    The monitor: `nonfinite_step` the first step with a non-finite metric (-1:
    none), `collapse_streak` the steps in a row that D looked collapsed,
    `collapse_step` the step the streak reached the window (-1: not yet; never
    with a window of 0).
  """
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v))
                              for v in jax.tree.leaves(metrics)]))
  nonfinite_step = jnp.where((monitor['nonfinite_step'] < 0) & ~finite, step,
                             monitor['nonfinite_step'])
  collapsed = ((metrics['d_loss'] < settings['collapse_d_loss']) &
               (metrics['d_fake'] < settings['collapse_d_fake']))
  streak = jnp.where(collapsed, monitor['collapse_streak'] + 1, 0)
  window = settings['collapse_window']
  collapse_step = jnp.where(
      (monitor['collapse_step'] < 0) & (window > 0) & (streak == window),
      step, monitor['collapse_step'])
  return {'nonfinite_step': nonfinite_step, 'collapse_streak': streak,
          'collapse_step': collapse_step}


def is_finite(tree) -> jnp.ndarray:
  """Whether every floating-point entry of a pytree is finite (bool scalar)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def inject_nan(images: jnp.ndarray, step: jnp.ndarray,
               nan_at_step: jnp.ndarray) -> jnp.ndarray:
  """`images` as NaN when this step ends at `nan_at_step` (debug only)."""
  return jnp.where(step + 1 == nan_at_step, jnp.nan, images)


# -------------------------------------------------------------- host side


@dataclasses.dataclass
class Record:
  """What a run has done about its health; saved with every checkpoint.

  Attributes:
    rollbacks: rollbacks so far.
    learning_rate_scale: multiplies both learning rates (the
      'lower_learning_rate' remedy).
    collapse_streak: the collapse streak at the checkpoint's step.
  """
  rollbacks: int = 0
  learning_rate_scale: float = 1.0
  collapse_streak: int = 0

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict[str, Any] | None) -> 'Record':
    """From `to_json`'s dict; a checkpoint without one gets the defaults."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (data or {}).items() if k in fields})


@dataclasses.dataclass(frozen=True)
class Problem:
  """Something wrong, as read from the monitor."""
  kind: str  # 'nonfinite' or 'collapse'
  step: int  # where it was first seen
  message: str


def read_problems(monitor: dict[str, Any], config) -> list[Problem]:
  """The problems a fetched monitor (host ints) shows; [] when healthy."""
  problems = []
  if monitor['nonfinite_step'] >= 0:
    problems.append(Problem(
        'nonfinite', int(monitor['nonfinite_step']),
        f"non-finite loss or gradient at step {monitor['nonfinite_step']}"))
  if monitor['collapse_step'] >= 0:
    problems.append(Problem(
        'collapse', int(monitor['collapse_step']),
        f'discriminator collapse: D loss < {config.collapse_d_loss} and '
        f'D(G(z)) < {config.collapse_d_fake} for {config.collapse_window} '
        f"steps in a row up to step {monitor['collapse_step']}"))
  return problems


def needs_rollback(problem: Problem, config) -> bool:
  return problem.kind == 'nonfinite' or config.collapse_action == 'rollback'


def next_record(record: Record, config) -> Record:
  """The record after one more rollback, with its remedy applied.

  Raises:
    DivergedError: that would be more than `config.max_rollbacks`.
  """
  rollbacks = record.rollbacks + 1
  if rollbacks > config.max_rollbacks:
    raise DivergedError(
        f'Training went wrong again after {record.rollbacks} rollbacks '
        f'(config.health.max_rollbacks = {config.max_rollbacks}); stopped. '
        'The last good checkpoint is kept. Try a lower learning rate '
        '(--config.g_learning_rate, --config.d_learning_rate), another '
        '--config.health.remedy, or a larger --config.health.max_rollbacks.')
  scale = record.learning_rate_scale
  if config.remedy == 'lower_learning_rate':
    scale *= config.learning_rate_factor
  return dataclasses.replace(record, rollbacks=rollbacks,
                             learning_rate_scale=scale)


def batches_to_skip(record: Record, config) -> int:
  """Batches skipped after a rollback's restored data position."""
  if config.remedy != 'skip_batches':
    return 0
  return config.skip_batches * record.rollbacks


def remedy_summary(record: Record, config) -> dict[str, Any]:
  """For logs and metrics.jsonl: what the run now does differently."""
  summary = {'remedy': config.remedy, 'rollbacks': record.rollbacks}
  if config.remedy == 'lower_learning_rate':
    summary['learning_rate_scale'] = record.learning_rate_scale
  else:
    summary['skipped_batches'] = batches_to_skip(record, config)
  return summary
