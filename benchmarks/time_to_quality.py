r"""FID against wall-clock minutes: the reference recipe on real anime faces.

  python benchmarks/time_to_quality.py                   # 60 min fp32, then bf16
  python benchmarks/time_to_quality.py --side_by_side    # both at once, a core each
  python benchmarks/time_to_quality.py --phase=evaluate --phase=plot
  python benchmarks/time_to_quality.py --side_by_side --seed=1 --minutes=20 \
      --phase=train        # shorter second runs: the run-to-run spread

Three phases, each resumable from what the one before left in --root:

* train: for each --dtype and --seed, `python -m experiments.avatar` on the
  faces (`config.data.source=folder`, `config.seed`; the run folder is
  `<dtype>`, or `<dtype>-seed<k>` for a seed k other than 0), a checkpoint
  every --checkpoint_every steps,
  all kept, stopped by SIGTERM --minutes after its launch (the graceful stop
  saves the last step too). The launch time is written to
  `<root>/<run>/launch.json`, so the clock includes start-up, the first
  build of the dataset cache and compilation: the wait a user has. By default
  the runs go one after another on the whole machine; --side_by_side starts
  them together, each pinned to its own core, which halves the wall time of
  the benchmark on two cores and keeps the comparison fair between them.
* evaluate: FID and KID (`dcgan.eval`, the evaluation's protocol and cached
  10,000-image reference) of --num_eval samples of up to --max_points
  checkpoints per run of the first --seed, the same steps for every run where
  they have them; runs of other seeds at the last of those steps they reached,
  where the first seed's runs are evaluated too.
  Each checkpoint's time is that of its step's row in metrics.jsonl. Results
  accumulate in `<root>/time_to_quality.json`; evaluated points are skipped
  when run again.
* plot: FID against minutes and against steps, one line per run, to
  --plot, and a table of FID at equal steps: runs of the same dtype and
  another seed show how far two runs differ by chance alone.

Needs the eval extra (pip install -e '.[eval]').
"""

import json
import math
import os
import pathlib
import platform
import signal
import subprocess
import sys
import time

from absl import app, flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FACES = REPO_ROOT.parent / 'shared/datasets/anime-faces-96/faces.zip'

_PHASE = flags.DEFINE_multi_enum('phase', ['train', 'evaluate', 'plot'],
                                 ['train', 'evaluate', 'plot'],
                                 'Phases to run, in this order.')
_ROOT = flags.DEFINE_string('root', 'runs/ttq', 'A folder per run goes here.')
_DTYPE = flags.DEFINE_multi_enum('dtype', ['float32', 'bfloat16'],
                                 ['float32', 'bfloat16'],
                                 'config.model.dtype of each run.')
_SEED = flags.DEFINE_multi_integer('seed', [0], 'config.seed of each run.')
_MINUTES = flags.DEFINE_float('minutes', 60.0, 'Wall-clock minutes per run, '
                              'from launch.', lower_bound=0.1)
_SIDE_BY_SIDE = flags.DEFINE_bool(
    'side_by_side', False, 'Start the runs at once, each pinned to its own '
    'core (needs as many cores as runs).')
_DATA = flags.DEFINE_string('data', str(FACES), 'A folder or .zip of faces.')
_CHECKPOINT_EVERY = flags.DEFINE_integer('checkpoint_every', 100,
                                         'Steps between checkpoints.',
                                         lower_bound=1)
_NUM_EVAL = flags.DEFINE_integer('num_eval', 2000, 'Samples per FID.',
                                 lower_bound=2)
_MAX_POINTS = flags.DEFINE_integer('max_points', 8, 'Checkpoints evaluated '
                                   'per run, spread over it.', lower_bound=1)
_PLOT = flags.DEFINE_string('plot', 'docs/time_to_quality.png',
                            'The PNG written by the plot phase.')
_OVERRIDE = flags.DEFINE_multi_string(
    'override', [], 'More flags for experiments.avatar, e.g. '
    '--override=--config.batch_size=128.')

RESULTS = 'time_to_quality.json'


def _runs() -> dict[str, tuple[str, int]]:
  """Run folder name -> (dtype, seed), for every --dtype and --seed."""
  return {(d if seed == 0 else f'{d}-seed{seed}'): (d, seed)
          for seed in _SEED.value for d in _DTYPE.value}


# ----------------------------------------------------------------- train --


def _command(workdir: pathlib.Path, dtype: str, seed: int) -> list[str]:
  every = _CHECKPOINT_EVERY.value
  return [sys.executable, '-m', 'experiments.avatar', '--workdir',
          str(workdir), '--config.data.source=folder',
          f'--config.data.path={_DATA.value}',
          f'--config.model.dtype={dtype}', f'--config.seed={seed}',
          '--config.num_train_steps=100000000',
          f'--config.checkpoint_every_steps={every}',
          '--config.keep_checkpoints=100000',
          f'--config.log_every_steps={math.gcd(every, 25)}',
          f'--config.sample_every_steps={every}', *_OVERRIDE.value]


def _launch(workdir: pathlib.Path, dtype: str, seed: int, core: int | None):
  if (workdir / 'checkpoints').exists():
    raise SystemExit(
        f'Error: {workdir} already holds a run; its clock would not start at '
        'zero if resumed. Give another --root, delete it, or run only '
        '--phase=evaluate --phase=plot.')
  workdir.mkdir(parents=True, exist_ok=True)
  command = _command(workdir, dtype, seed)
  log = open(workdir / 'train.log', 'w')  # pylint: disable=consider-using-with
  launched = time.time()
  process = subprocess.Popen(  # pylint: disable=consider-using-with
      command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
      preexec_fn=(lambda: os.sched_setaffinity(0, {core}))
      if core is not None else None)
  (workdir / 'launch.json').write_text(json.dumps({
      'time': launched, 'dtype': dtype, 'seed': seed,
      'minutes': _MINUTES.value,
      'core': core, 'command': command, 'machine': platform.node(),
      'cpus': os.cpu_count()}, indent=1))
  print(f'{workdir.name}: launched in {workdir}' +
        (f' on core {core}' if core is not None else ''), flush=True)
  return process, launched


def _signal_stop(process, launched: float) -> None:
  time.sleep(max(0.0, launched + _MINUTES.value * 60 - time.time()))
  if process.poll() is None:
    process.send_signal(signal.SIGTERM)  # finishes the step, saves, exits 0


def _stop(process, launched: float, name: str) -> None:
  _signal_stop(process, launched)
  code = process.wait()
  print(f'{name}: stopped after {(time.time() - launched) / 60:.1f} min, '
        f'exit code {code}', flush=True)
  if code != 0:
    raise SystemExit(f'Error: the {name} run failed; see its train.log.')


def train(root: pathlib.Path) -> None:
  runs = _runs()
  if _SIDE_BY_SIDE.value:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < len(runs):
      raise SystemExit(f'Error: --side_by_side needs {len(runs)} cores, '
                       f'this process may use {len(cores)}.')
    running = [(_launch(root / name, *runs[name], core), name)
               for name, core in zip(runs, cores)]
    for (process, launched), _ in running:  # each at its own deadline
      _signal_stop(process, launched)
    for (process, launched), name in running:
      _stop(process, launched, name)
  else:
    for name, (dtype, seed) in runs.items():
      _stop(*_launch(root / name, dtype, seed, None), name)


# -------------------------------------------------------------- evaluate --


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  folder = workdir / 'checkpoints'
  return sorted(int(p.name) for p in folder.iterdir()
                if p.name.isdigit() and (p / 'integrity.json').exists())


def _step_times(workdir: pathlib.Path) -> dict[int, float]:
  """Step -> unix time of its row in metrics.jsonl (the latest row wins)."""
  times = {}
  with open(workdir / 'metrics.jsonl') as f:
    for line in f:
      row = json.loads(line)
      times[row['step']] = row['time']
  return times


def _spread(steps: list[int], count: int) -> list[int]:
  """`count` of `steps`, roughly evenly spaced, always the last."""
  if len(steps) <= count:
    return steps
  picked = {steps[round(i * (len(steps) - 1) / (count - 1))]
            for i in range(count)} if count > 1 else set()
  return sorted(picked | {steps[-1]})


def _points_to_evaluate(runs: dict[str, pathlib.Path],
                        primary: list[str]) -> dict[str, list[int]]:
  """Steps to evaluate per run.

  `primary` runs: steps spread over the shortest of them, and each one's
  last. Every other run (another seed, often shorter): its last step that the
  primary runs share; the primary runs are evaluated there too, so every pair
  of runs meets at an equal step.
  """
  steps = {name: _checkpoint_steps(w) for name, w in runs.items()}
  common = sorted(set.intersection(*(set(steps[n]) for n in primary)))
  shared = set(_spread(common, _MAX_POINTS.value - 1))
  others = {name: set(_spread(sorted(set(s) & set(common)), 1))
            for name, s in steps.items() if name not in primary}
  for picked in others.values():
    shared |= picked
  points = {name: sorted(shared | {steps[name][-1]}) for name in primary}
  points.update({name: sorted(picked) for name, picked in others.items()})
  return points


def evaluate(root: pathlib.Path) -> None:
  from dcgan.eval import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  names = _runs()
  runs = {name: root / name for name in names}
  for workdir in runs.values():
    if not (workdir / 'launch.json').exists():
      raise SystemExit(f'Error: no run in {workdir}; run --phase=train first.')
  results_path = root / RESULTS
  results = _read_results(root) if results_path.exists() else {'points': []}
  done = {(p['run'], p['step'], p['num_eval']) for p in results['points']}
  primary = [n for n, (_, seed) in names.items() if seed == _SEED.value[0]]
  for name, steps in _points_to_evaluate(runs, primary).items():
    workdir = runs[name]
    dtype, seed = names[name]
    launched = json.loads((workdir / 'launch.json').read_text())['time']
    times = _step_times(workdir)
    eval_config = evaluate_lib.resolve_eval_config(None, _run_config(workdir))
    eval_config.coverage, eval_config.cascade_path = False, ''
    for step in steps:
      if (name, step, _NUM_EVAL.value) in done:
        continue
      start = time.perf_counter()
      result = evaluate_lib.evaluate_generator(workdir, eval_config, step=step,
                                               num=_NUM_EVAL.value)
      scores = result['inception']
      point = {'run': name, 'dtype': dtype, 'seed': seed, 'step': step,
               'num_eval': _NUM_EVAL.value,
               'minutes': (times[step] - launched) / 60,
               'fid': scores['fid'], 'kid': scores['kid'],
               'kid_std_err': scores['kid_std_err'],
               'protocol': scores['protocol']}
      results['points'].append(point)
      results_path.write_text(json.dumps(results, indent=1))
      print(f"{name} step {step} ({point['minutes']:.1f} min): FID "
            f"{point['fid']:.1f}, KID {point['kid']:.4f} "
            f'[{time.perf_counter() - start:.0f} s]', flush=True)


def _read_results(root: pathlib.Path) -> dict:
  results = json.loads((root / RESULTS).read_text())
  for point in results['points']:  # written before runs had seeds
    point.setdefault('run', point['dtype'])
    point.setdefault('seed', 0)
  return results


def _run_config(workdir: pathlib.Path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(
      json.loads((workdir / 'config.json').read_text()))


# ------------------------------------------------------------------ plot --


def plot(root: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  names = _runs()
  results = _read_results(root)
  points = [p for p in results['points'] if p['num_eval'] == _NUM_EVAL.value
            and p['run'] in names]
  by_run = {n: sorted((p for p in points if p['run'] == n),
                      key=lambda p: p['step'])
            for n in names if any(p['run'] == n for p in points)}
  if not by_run:
    raise SystemExit(f'Error: no evaluated points in {root / RESULTS}; run '
                     '--phase=evaluate first.')
  colours = {d: f'C{i}' for i, d in enumerate(_DTYPE.value)}
  figure, (by_time, by_step) = plt.subplots(1, 2, figsize=(10, 4))
  for name, ps in by_run.items():
    dtype, seed = names[name]
    style = dict(color=colours[dtype], label=name, marker='o',
                 linestyle='-' if seed == _SEED.value[0] else '--')
    by_time.plot([p['minutes'] for p in ps], [p['fid'] for p in ps], **style)
    by_step.plot([p['step'] for p in ps], [p['fid'] for p in ps], **style)
  first = json.loads((root / next(iter(by_run)) / 'launch.json').read_text())
  where = ('side by side, one core each' if first['core'] is not None
           else 'one after another, all cores')
  num_reference = points[0]['protocol']['num_images']
  by_time.set(xlabel='wall-clock minutes from launch', ylabel=(
      f'FID ({_NUM_EVAL.value:,} samples vs {num_reference:,} real)'),
              yscale='log', title=f'Reference recipe, 48x48 ({where})')
  by_step.set(xlabel='training steps (1 D + 2 G updates of 64 images)',
              yscale='log', title='The same points by step')
  for axes in (by_time, by_step):
    axes.grid(True, which='both', alpha=0.3)
    axes.yaxis.set_major_formatter(ticker.ScalarFormatter())
    axes.yaxis.set_minor_formatter(ticker.ScalarFormatter())
    axes.legend()
  figure.tight_layout()
  os.makedirs(os.path.dirname(_PLOT.value) or '.', exist_ok=True)
  figure.savefig(_PLOT.value, dpi=100)
  print(f'Wrote {_PLOT.value}')

  print('\nFID at equal steps (minutes from launch in brackets)')
  print('| step | ' + ' | '.join(by_run) + ' |')
  print('| --- |' + ' --- |' * len(by_run))
  fid = {(p['run'], p['step']): p for p in points}
  for step in sorted({p['step'] for p in points}):
    cells = [f"{fid[n, step]['fid']:.1f} ({fid[n, step]['minutes']:.0f})"
             if (n, step) in fid else '' for n in by_run]
    print(f'| {step} | ' + ' | '.join(cells) + ' |')
  print('\nKID (std err) at each run\'s last point')
  for name, ps in by_run.items():
    p = ps[-1]
    print(f"{name}: step {p['step']}, {p['minutes']:.1f} min: KID "
          f"{p['kid']:.4f} ({p['kid_std_err']:.4f})")


def main(argv):
  del argv
  os.chdir(REPO_ROOT)
  root = pathlib.Path(_ROOT.value)
  root.mkdir(parents=True, exist_ok=True)
  for phase in ('train', 'evaluate', 'plot'):
    if phase in _PHASE.value:
      {'train': train, 'evaluate': evaluate, 'plot': plot}[phase](root)


if __name__ == '__main__':
  app.run(main)
