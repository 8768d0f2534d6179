"""Benchmarks the data layer: preparing the sets and the grain pipeline.

Prints the median of --runs runs of:
* seconds to prepare the procedural set (--num_examples, default 50,000),
  each run into a fresh cache;
* images/s that `create_train_iterator` delivers at --image_size and
  --batch_size (after a warm-up batch), over --seconds seconds;
* the same two for the real faces zip (../shared/datasets/anime-faces-96/
  faces.zip from the repo root, or --faces_zip) when it is present;
* the training step's images/s (the reference recipe, jitted) fed by that
  iterator, as the training loop feeds it, against the same step on one
  constant batch: --step_blocks blocks of --step_steps steps each, the two
  in turn, so that a noisy machine slows both alike; and the pipeline's
  rate as a multiple of what the step consumes.

Usage: python benchmarks/data_pipeline.py [--runs 3] [--num_examples 50000]
       python benchmarks/data_pipeline.py --step_blocks 0   # data only
"""

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from dcgan.data import pipeline  # pylint: disable=g-import-not-at-top

FACES_ZIP = REPO_ROOT.parent / 'shared' / 'datasets' / 'anime-faces-96' / (
    'faces.zip')


def _cpu_seconds() -> float:
  """CPU time of this process and its reaped children (the drawing pool)."""
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


def time_prepare(config) -> tuple[float, float]:
  """(wall, CPU) seconds to prepare `config` into an empty cache.

  CPU seconds / number of CPUs is the wall time on an otherwise idle machine.
  """
  shutil.rmtree(config.cache_dir, ignore_errors=True)
  start, cpu = time.perf_counter(), _cpu_seconds()
  pipeline.prepare(config)
  return time.perf_counter() - start, _cpu_seconds() - cpu


def images_per_second(config, image_size: int, batch_size: int,
                      seconds: float) -> float:
  """Throughput of the training iterator after one warm-up batch."""
  iterator = pipeline.create_train_iterator(
      config, image_size=image_size, batch_size=batch_size, seed=0)
  next(iterator)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += next(iterator)['image'].shape[0]
  return count / (time.perf_counter() - start)


def step_with_data(config, args) -> tuple[list[float], list[float]]:
  """img/s of the train step fed by the iterator and on a constant batch."""
  import jax  # pylint: disable=g-import-not-at-top
  import reference_step  # pylint: disable=g-import-not-at-top
  from dcgan import heap  # pylint: disable=g-import-not-at-top
  from experiments.configs import avatar  # pylint: disable=g-import-not-at-top

  run_config = avatar.get_config()
  run_config.data = config
  run_config.image_size, run_config.batch_size = (args.image_size,
                                                  args.batch_size)
  state, step = reference_step.build(run_config)
  iterator = pipeline.create_train_iterator(
      config, image_size=args.image_size, batch_size=args.batch_size, seed=0)
  constant = {'image': heap.to_device(next(iterator)['image'])}
  rng = jax.random.key(0)
  state, metrics = step(state, constant, rng)  # compiles
  jax.block_until_ready(metrics)

  def block(fed: bool) -> float:
    nonlocal state
    start = time.perf_counter()
    for _ in range(args.step_steps):
      # Copied in before the step, as the training loop does.
      batch = ({'image': heap.to_device(next(iterator)['image'])} if fed
               else constant)
      state, metrics = step(state, batch, rng)
    jax.block_until_ready((state, metrics))
    return args.step_steps * args.batch_size / (time.perf_counter() - start)

  fed, still = [], []
  for _ in range(args.step_blocks):
    fed.append(block(True))
    still.append(block(False))
  return fed, still


def bench(name: str, config, args) -> None:
  """Prints median prepare time and pipeline throughput for one source."""
  prepare_s, cpu_s = zip(*[time_prepare(config) for _ in range(args.runs)])
  rates = [images_per_second(config, args.image_size, args.batch_size,
                             args.seconds) for _ in range(args.runs)]
  print(f'{name}: prepare {statistics.median(prepare_s):.1f} s wall, '
        f'{statistics.median(cpu_s):.1f} CPU-s '
        f'(runs: {", ".join(f"{s:.1f}" for s in prepare_s)} s); pipeline '
        f'{statistics.median(rates):.0f} images/s at {args.image_size}x'
        f'{args.image_size}, batch {args.batch_size} '
        f'(runs: {", ".join(f"{r:.0f}" for r in rates)})', flush=True)
  if args.step_blocks:
    fed, still = step_with_data(config, args)
    ratios = [f / s for f, s in zip(fed, still)]
    print(f'{name}: train step {statistics.median(fed):.1f} img/s fed by the '
          f'pipeline, {statistics.median(still):.1f} img/s on a constant '
          f'batch (fed/constant {statistics.median(ratios):.3f}, per block '
          f'{", ".join(f"{r:.3f}" for r in ratios)}); the pipeline delivers '
          f'{statistics.median(rates) / statistics.median(fed):.0f}x what '
          'the step consumes', flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--num_examples', type=int, default=50_000)
  parser.add_argument('--image_size', type=int, default=48)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--faces_zip', default=str(FACES_ZIP))
  parser.add_argument('--step_blocks', type=int, default=5,
                      help='blocks of the train step, fed and constant in '
                      'turn (0 skips)')
  parser.add_argument('--step_steps', type=int, default=10,
                      help='steps per block')
  args = parser.parse_args()
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  print(f'{os.cpu_count()} CPUs, load average {load} (other processes slow '
        f'the wall times); median of {args.runs} runs', flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    config = pipeline.get_default_data_config()
    config.num_examples = args.num_examples
    config.cache_dir = os.path.join(tmp, 'procedural')
    bench(f'procedural ({args.num_examples} images)', config, args)
    shutil.rmtree(config.cache_dir, ignore_errors=True)
    if not os.path.exists(args.faces_zip):
      print(f'faces zip: skipped, {args.faces_zip} not found')
      return
    config = pipeline.get_default_data_config()
    config.source, config.path = 'folder', args.faces_zip
    config.cache_dir = os.path.join(tmp, 'faces')
    bench(f'faces zip ({args.faces_zip})', config, args)


if __name__ == '__main__':
  main()
