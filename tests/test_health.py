"""Health guard: non-finite numbers and D collapse, rollbacks and remedies."""

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcgan import checkpointing, health, models, train
from dcgan import state as state_lib


def _metrics(d_loss=1.0, d_fake=0.5, g_grad_norm=1.0):
  return {'d_loss': jnp.float32(d_loss), 'd_fake': jnp.float32(d_fake),
          'g_loss': jnp.float32(0.7), 'd_grad_norm': jnp.float32(2.0),
          'g_grad_norm': jnp.float32(g_grad_norm)}


def _run_monitor(config, per_step_metrics):
  """The monitor after feeding it each step's metrics through jit."""
  update = jax.jit(lambda m, metrics, step: health.update_monitor(
      m, metrics, step, health.monitor_settings(config)))
  monitor = health.init_monitor()
  for step, metrics in enumerate(per_step_metrics, start=1):
    monitor = update(monitor, metrics, jnp.int32(step))
  return {k: int(v) for k, v in jax.device_get(monitor).items()}


def test_monitor_keeps_the_first_non_finite_step():
  config = health.get_default_health_config()
  steps = [_metrics()] * 3 + [_metrics(g_grad_norm=np.inf),
                              _metrics(d_loss=np.nan), _metrics()]
  monitor = _run_monitor(config, steps)
  assert monitor['nonfinite_step'] == 4
  assert _run_monitor(config, [_metrics()] * 6)['nonfinite_step'] == -1
  [problem] = health.read_problems(monitor, config)
  assert problem.kind == 'nonfinite' and problem.step == 4
  assert health.needs_rollback(problem, config)


def test_monitor_flags_a_collapse_once_its_streak_fills_the_window():
  config = health.get_default_health_config()
  config.collapse_window = 3
  collapsed = _metrics(d_loss=0.01, d_fake=0.01)
  half = _metrics(d_loss=0.01, d_fake=0.3)  # D(G(z)) not near 0
  monitor = _run_monitor(config, [collapsed, collapsed, half, collapsed,
                                  collapsed])
  assert monitor == {'nonfinite_step': -1, 'collapse_streak': 2,
                     'collapse_step': -1}
  monitor = _run_monitor(config, [half] + [collapsed] * 5)
  assert monitor == {'nonfinite_step': -1, 'collapse_streak': 5,
                     'collapse_step': 4}
  [problem] = health.read_problems(monitor, config)
  assert problem.kind == 'collapse'
  assert 'for 3 steps in a row up to step 4' in problem.message
  assert not health.needs_rollback(problem, config)  # 'warn' by default
  config.collapse_window = 0  # off
  assert _run_monitor(config, [collapsed] * 5)['collapse_step'] == -1


def test_is_finite_looks_at_every_float_and_ignores_ints():
  tree = {'a': jnp.ones(3), 'b': {'c': jnp.zeros((2, 2))},
          'step': jnp.int32(7)}
  assert bool(jax.jit(health.is_finite)(tree))
  for bad in (np.nan, np.inf, -np.inf):
    tree['b']['c'] = tree['b']['c'].at[1, 0].set(bad)
    assert not bool(jax.jit(health.is_finite)(tree))


def test_remedies_and_the_rollback_budget():
  config = health.get_default_health_config()
  config.max_rollbacks = 2
  record = health.Record()
  record = health.next_record(record, config)
  record = health.next_record(record, config)
  assert (record.rollbacks, record.learning_rate_scale) == (2, 0.25)
  assert health.batches_to_skip(record, config) == 0
  with pytest.raises(health.DivergedError,
                     match=r'again after 2 rollbacks \(config\.health\.'
                     r'max_rollbacks = 2\); stopped'):
    health.next_record(record, config)
  config.remedy = 'skip_batches'
  record = health.next_record(health.Record(), config)
  assert (record.rollbacks, record.learning_rate_scale) == (1, 1.0)
  assert health.batches_to_skip(record, config) == config.skip_batches
  assert health.Record.from_json(record.to_json()) == record
  assert health.Record.from_json(None) == health.Record()


# ------------------------------------------------------------ in the loop
# The tiny config: checkpoints every 3 steps, metrics every 2.


def _events(workdir):
  return [json.loads(line) for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()
          if '"event"' in line]


def _checkpoints_are_finite(config, workdir):
  generator, discriminator = models.create_models(config.model,
                                                  config.image_size)
  g_tx, d_tx = state_lib.create_optimizers(config)
  abstract = jax.eval_shape(lambda: state_lib.create_state(
      config, generator, discriminator, g_tx, d_tx))
  manager = checkpointing.create_manager(workdir / 'checkpoints', keep=9)
  steps = manager.all_steps()
  finite = [bool(health.is_finite(checkpointing.restore(
      manager, abstract, step=s)[0])) for s in steps]
  manager.close()
  return steps, finite


def _leaves_equal(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.asarray(x).tobytes() == np.asarray(y).tobytes()
      for x, y in zip(la, lb))


@pytest.fixture
def nan_config(tiny_config):
  tiny_config.num_train_steps = 9
  tiny_config.debug.nan_at_step = 5
  return tiny_config


def test_nan_rolls_back_with_a_lower_learning_rate(nan_config, tmp_path):
  workdir = tmp_path / 'run'
  state = train.train_and_evaluate(nan_config, workdir)
  assert int(state.step) == 9 and bool(health.is_finite(state))
  # NaN at step 5, seen at step 6 (metrics, and before the save), back to 3.
  [event] = _events(workdir)
  assert event['event'] == 'rollback' and event['step'] == 6
  assert event['problem'] == 'nonfinite' and event['since_step'] == 5
  assert event['restored_step'] == 3 and event['rollbacks'] == 1
  assert event['learning_rate_scale'] == 0.5
  # No checkpoint ever held a NaN; the remedy is saved with the later ones.
  steps, finite = _checkpoints_are_finite(nan_config, workdir)
  assert steps == [6, 9] and all(finite)
  saved = json.loads((workdir / 'checkpoints' / '9' / 'health' / 'metadata'
                      ).read_text())
  assert saved == {'rollbacks': 1, 'learning_rate_scale': 0.5,
                   'collapse_streak': 0}

  # Resumed from an off-schedule checkpoint (a stop at step 4): the rollback
  # goes to the same scheduled checkpoint and ends in the same bits.
  stopped = copy.deepcopy(nan_config)
  stopped.num_train_steps = 4
  train.train_and_evaluate(stopped, tmp_path / 'resumed')
  resumed = train.train_and_evaluate(nan_config, tmp_path / 'resumed')
  assert _leaves_equal(state, resumed)
  # And the run without a NaN differs: the remedy did change the training.
  nan_config.debug.nan_at_step = 0
  clean = train.train_and_evaluate(nan_config, tmp_path / 'clean')
  assert not _leaves_equal(state.g_params, clean.g_params)


def test_repeated_nan_stops_after_max_rollbacks(nan_config, tmp_path):
  nan_config.health.remedy = 'skip_batches'
  nan_config.health.skip_batches = 2
  nan_config.health.max_rollbacks = 2
  nan_config.debug.nan_attempts = 3  # more than the run may roll back
  workdir = tmp_path / 'run'
  with pytest.raises(health.DivergedError,
                     match=r'after 2 rollbacks .* The last good checkpoint is '
                     'kept'):
    train.train_and_evaluate(nan_config, workdir)
  events = _events(workdir)
  assert [(e['event'], e['step']) for e in events] == [
      ('rollback', 6), ('rollback', 6), ('diverged', 6)]
  assert [e['skipped_batches'] for e in events[:2]] == [2, 4]
  steps, finite = _checkpoints_are_finite(nan_config, workdir)
  assert steps == [3] and all(finite)


def test_collapse_warns_or_rolls_back(tiny_config, tmp_path, caplog):
  # Thresholds no D can stay above: "collapsed" from the first step.
  tiny_config.health.collapse_window = 2
  tiny_config.health.collapse_d_loss = 10.0
  tiny_config.health.collapse_d_fake = 1.0
  state = train.train_and_evaluate(tiny_config, tmp_path / 'warn')
  assert int(state.step) == 6
  [event] = _events(tmp_path / 'warn')
  assert (event['event'], event['step'], event['action']) == (
      'collapse', 2, 'warn')
  assert any('discriminator collapse' in r.getMessage() and
             "collapse_action = 'warn'" in r.getMessage()
             for r in caplog.records)

  tiny_config.health.collapse_action = 'rollback'
  tiny_config.health.max_rollbacks = 1
  with pytest.raises(health.DivergedError):
    train.train_and_evaluate(tiny_config, tmp_path / 'rollback')
  events = _events(tmp_path / 'rollback')
  # No checkpoint yet at step 2: back to the start, then a second collapse.
  assert [(e['event'], e['step']) for e in events] == [('rollback', 2),
                                                       ('diverged', 2)]
  assert events[0]['restored_step'] == 0
