"""Kill training anywhere, restart it, and get the same bits.

Trains the tiny config (--steps steps, a checkpoint every --checkpoint_every)
once straight through, then again in a second workdir that is killed with
SIGKILL at --trials moments and restarted after each kill, with the same
command, until it finishes. The moments are drawn from --seed and are of
three kinds:

* `startup`: a random 0.3-3 s after launch (imports, restore, compile);
* `step`: as soon as training reaches a random step (mid-step, or
  mid-logging);
* `checkpoint_write`: after a random step, at the first sight of orbax's
  temporary checkpoint folder, i.e. while a checkpoint is being written.

Then both final checkpoints are restored and every array compared byte for
byte: parameters, BatchNorm averages, optimizer states, step and RNG. It
prints one line per kill (when, what was seen, where the restart resumed, how
long the restart took) and PASS or FAIL; the exit status is 0 on PASS.

`--override=--config.debug.nan_at_step=N` makes both runs hit a NaN and roll
back, which must not change the outcome either.

Usage: python benchmarks/kill_anywhere.py [--steps 300] [--trials 5]
"""

import argparse
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

KINDS = ('step', 'checkpoint_write', 'startup')
TMP_MARKER = '.orbax-checkpoint-tmp'
POLL_S = 0.002


def _command(args, workdir: pathlib.Path) -> list[str]:
  return [sys.executable, '-m', 'experiments.avatar',
          '--workdir', str(workdir),
          '--config', str(REPO_ROOT / 'experiments/configs/tiny.py'),
          f'--config.num_train_steps={args.steps}',
          f'--config.checkpoint_every_steps={args.checkpoint_every}',
          f'--config.keep_checkpoints={args.keep}',
          # A metrics line every step: the watcher sees each step go by.
          '--config.log_every_steps=1',
          f'--config.sample_every_steps={args.steps}',
          f'--config.data.cache_dir={args.cache_dir}', *args.override]


class _Process:
  """A training subprocess whose stderr lines are time-stamped as they come."""

  def __init__(self, command: list[str]):
    self.start = time.perf_counter()
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    self.popen = subprocess.Popen(command, cwd=REPO_ROOT, env=env,
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
    self.lines: list[tuple[float, str]] = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.popen.stderr:
      self.lines.append((time.perf_counter() - self.start, line.rstrip()))

  def seconds_to(self, text: str) -> float | None:
    """Seconds from launch to the first stderr line containing `text`."""
    return next((t for t, line in list(self.lines) if text in line), None)

  def wait(self, timeout: float) -> int:
    code = self.popen.wait(timeout=timeout)
    self._reader.join(timeout=5)
    return code

  def tail(self, n: int = 30) -> str:
    return '\n'.join(line for _, line in self.lines[-n:])


def _metrics_size(workdir: pathlib.Path) -> int:
  try:
    return os.path.getsize(workdir / 'metrics.jsonl')
  except FileNotFoundError:
    return 0


def _last_step(workdir: pathlib.Path, since: int) -> int | None:
  """The last step logged in metrics.jsonl after byte `since` (None: none)."""
  path = workdir / 'metrics.jsonl'
  if _metrics_size(workdir) <= since:
    return None
  with open(path, 'rb') as f:
    f.seek(max(since, f.seek(0, 2) - 4096))
    lines = f.read().splitlines()
  for line in reversed(lines):
    try:
      return int(json.loads(line)['step'])
    except (ValueError, KeyError):
      continue
  return None


def _saving(workdir: pathlib.Path) -> bool:
  try:
    return any(TMP_MARKER in name
               for name in os.listdir(workdir / 'checkpoints'))
  except FileNotFoundError:
    return False


def _kill_plan(args) -> list[tuple[str, int | float]]:
  """(kind, target) per trial: a step for step kinds, seconds for startup."""
  rng = random.Random(args.seed)
  kinds = [KINDS[i % len(KINDS)] for i in range(args.trials)]
  rng.shuffle(kinds)
  steps = sorted(rng.sample(range(1, args.steps - args.checkpoint_every),
                            args.trials))
  return [(kind, round(rng.uniform(0.3, 3.0), 2) if kind == 'startup'
           else step) for kind, step in zip(kinds, steps)]


def _run_until_killed(args, workdir, kind, target) -> dict:
  """Launches training and SIGKILLs it at the planned moment."""
  # Only what this launch logs counts: earlier launches' lines are stale, and
  # so is a temporary folder of theirs until this one's start-up removes it.
  since = _metrics_size(workdir)
  process = _Process(_command(args, workdir))
  deadline = time.perf_counter() + args.timeout
  seen_step = first_step_at = None
  while process.popen.poll() is None and time.perf_counter() < deadline:
    elapsed = time.perf_counter() - process.start
    seen_step = _last_step(workdir, since)
    if seen_step is not None and first_step_at is None:
      first_step_at = elapsed
    reached = seen_step is not None and seen_step >= target
    if kind == 'startup':
      fire = elapsed >= target
    elif kind == 'step':
      fire = reached
    else:
      fire = reached and _saving(workdir)
    if fire:
      process.popen.send_signal(signal.SIGKILL)
      break
    time.sleep(POLL_S)
  code = process.wait(timeout=60)
  killed_at = time.perf_counter() - process.start
  resumed = process.seconds_to('Training from step')
  return {
      'kind': kind, 'target': target, 'killed': code == -signal.SIGKILL,
      'exit_code': code, 'seconds_alive': round(killed_at, 2),
      'last_logged_step': seen_step,
      'tmp_checkpoint_left': kind != 'startup' and _saving(workdir),
      'resumed_from': _resumed_from(process),
      'seconds_to_resume': None if resumed is None else round(resumed, 2),
      'seconds_to_first_step': _round(first_step_at),
      'stderr_tail': process.tail(),
  }


def _round(seconds: float | None) -> float | None:
  return None if seconds is None else round(seconds, 2)


def _resumed_from(process: _Process) -> int | None:
  for _, line in process.lines:
    if 'Training from step' in line:
      return int(line.split('Training from step')[1].split()[0])
  return None


def _run_to_end(args, workdir) -> dict:
  since = _metrics_size(workdir)
  process = _Process(_command(args, workdir))
  first_step_at = None
  while process.popen.poll() is None:
    if first_step_at is None and _metrics_size(workdir) > since:
      first_step_at = time.perf_counter() - process.start
    time.sleep(0.01)
  code = process.wait(timeout=args.timeout)
  return {'exit_code': code,
          'seconds': round(time.perf_counter() - process.start, 2),
          'resumed_from': _resumed_from(process),
          'seconds_to_resume': _round(process.seconds_to('Training from step')),
          'seconds_to_first_step': _round(first_step_at),
          'stderr_tail': process.tail()}


def _final_states(args, workdirs):
  """Restores the final checkpoint of each workdir (needs JAX here only)."""
  # pylint: disable=g-import-not-at-top
  import jax
  from dcgan import checkpointing
  from dcgan import state as state_lib
  from experiments.configs import tiny
  abstract = state_lib.abstract_state(tiny.get_config())
  states = []
  for workdir in workdirs:
    manager = checkpointing.create_manager(workdir / 'checkpoints',
                                           keep=args.keep)
    step = manager.latest_step()
    ok, why = checkpointing.verify_manifest(
        checkpointing.step_dir(manager, step))
    state, _ = checkpointing.restore(manager, abstract, step=step)
    manager.close()
    states.append((step, ok, why, jax.device_get(state)))
  return states


def _compare(a, b) -> tuple[bool, int, int, int]:
  """(equal, bytes compared, arrays compared, parameter bytes)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  equal = len(la) == len(lb) and all(
      np.asarray(x).dtype == np.asarray(y).dtype and
      np.asarray(x).tobytes() == np.asarray(y).tobytes()
      for x, y in zip(la, lb))
  num_bytes = sum(np.asarray(x).nbytes for x in la)
  param_bytes = sum(np.asarray(x).nbytes for x in
                    jax.tree.leaves((a.g_params, a.d_params)))
  return equal, num_bytes, len(la), param_bytes


def _metrics_readable(workdir: pathlib.Path) -> bool:
  try:
    for line in (workdir / 'metrics.jsonl').read_text().splitlines():
      json.loads(line)
    return True
  except ValueError:
    return False


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--trials', type=int, default=5)
  parser.add_argument('--checkpoint_every', type=int, default=25)
  parser.add_argument('--keep', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workdir', default='',
                      help="where the two runs go; '' is a temporary folder")
  parser.add_argument('--cache_dir', default='',
                      help="dataset cache ('' is the default cache)")
  parser.add_argument('--timeout', type=float, default=900,
                      help='seconds allowed to one launch')
  parser.add_argument('--override', action='append', default=[],
                      help='a config flag for both runs, e.g. '
                      '--override=--config.debug.nan_at_step=60 (repeatable)')
  args = parser.parse_args()
  root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='kill_anywhere_'))
  reference, interrupted = root / 'straight', root / 'killed'
  for path in (reference, interrupted):
    if path.exists() and any(path.iterdir()):
      sys.exit(f'{path} is not empty: pass an empty --workdir.')

  plan = _kill_plan(args)
  print(f'workdirs: {root}\nplan: ' +
        ', '.join(f'{kind}@{target}' for kind, target in plan), flush=True)
  straight = _run_to_end(args, reference)
  print(f"straight run: {straight['seconds']} s, exit {straight['exit_code']}",
        flush=True)
  if straight['exit_code'] != 0:
    print(straight['stderr_tail'])
    return 1

  trials = []
  for i, (kind, target) in enumerate(plan):
    trial = _run_until_killed(args, interrupted, kind, target)
    trials.append(trial)
    print(f"kill {i + 1}: {kind} (target {target}): killed={trial['killed']} "
          f"after {trial['seconds_alive']} s, last logged step "
          f"{trial['last_logged_step']}, checkpoint write cut short="
          f"{trial['tmp_checkpoint_left']}; this launch started from step "
          f"{trial['resumed_from']}: restored after "
          f"{trial['seconds_to_resume']} s, first step logged after "
          f"{trial['seconds_to_first_step']} s", flush=True)
    if not trial['killed']:
      print(trial['stderr_tail'])
  final = _run_to_end(args, interrupted)
  print(f"final launch: started from step {final['resumed_from']}: restored "
        f"after {final['seconds_to_resume']} s, first step logged after "
        f"{final['seconds_to_first_step']} s; finished in {final['seconds']} "
        f"s, exit {final['exit_code']}", flush=True)
  if final['exit_code'] != 0:
    print(final['stderr_tail'])
    return 1

  (step_a, ok_a, why_a, a), (step_b, ok_b, why_b, b) = _final_states(
      args, [reference, interrupted])
  equal, num_bytes, num_arrays, param_bytes = _compare(a, b)
  kills = sum(t['killed'] for t in trials)
  mid_save = sum(t['killed'] and t['tmp_checkpoint_left'] for t in trials)
  relaunches = trials[1:] + [final]
  resume_times = sorted(t['seconds_to_resume'] for t in relaunches
                        if t['seconds_to_resume'] is not None)
  first_step_times = sorted(t['seconds_to_first_step'] for t in relaunches
                            if t['seconds_to_first_step'] is not None)
  damaged = (interrupted / 'checkpoints' / 'damaged').exists()
  checks = {
      f'{kills}/{len(plan)} launches killed': kills == len(plan),
      f'final steps {step_a} and {step_b}': step_a == step_b == args.steps,
      f'manifests verify ({why_a or "ok"}, {why_b or "ok"})':
          ok_a is True and ok_b is True,
      'no checkpoint moved aside as damaged': not damaged,
      'metrics.jsonl readable line by line': _metrics_readable(interrupted),
      f'{num_arrays} arrays, {num_bytes} bytes ({param_bytes} of parameters) '
      'bitwise equal': equal,
  }
  for name, passed in checks.items():
    print(f"{'ok  ' if passed else 'FAIL'} {name}")
  for name, times in (('checkpoint restored', resume_times),
                      ('first step logged', first_step_times)):
    if times:
      print(f'seconds from relaunch to {name}: median '
            f'{times[len(times) // 2]}, range {times[0]}-{times[-1]} '
            f'({len(times)} relaunches)')
  print(f'kills during a checkpoint write: {mid_save}')
  passed = all(checks.values())
  print('PASS' if passed else 'FAIL')
  return 0 if passed else 1


if __name__ == '__main__':
  sys.exit(main())
