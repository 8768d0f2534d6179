r"""Trains the attribute classifiers of mode coverage and prints their figures.

  python benchmarks/attribute_classifier.py                # both datasets
  python benchmarks/attribute_classifier.py --dataset=procedural --retrain

For the built-in avatars (the reference recipe's `config.data`: 50,000
images) and, when present, the real faces (../shared/datasets/anime-faces-96/
faces.zip and its labels.csv, from the repo root, or --faces_zip), at
--image_size (48), with the default classifier settings of each source:

* seconds to read the dataset, to train, and images/s of prediction;
* held-out accuracy per attribute next to always answering the commonest
  class;
* the coverage and KL numbers of `--num_samples` real images against the rest
  of the dataset (`attributes.coverage_floor`): what a perfect generator
  scores, and for contrast those of a collapsed "generator" (one real image
  repeated).

The classifiers land in the dataset cache, where `attributes.train_or_load`
(and so the evaluation) finds them; --retrain trains them again.
"""

import argparse
import json
import logging
import os
import pathlib
import shutil
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # pylint: disable=g-import-not-at-top

from dcgan.eval import attributes, coverage  # pylint: disable=g-import-not-at-top
from experiments.configs import avatar  # pylint: disable=g-import-not-at-top

FACES_ZIP = REPO_ROOT.parent / 'shared' / 'datasets' / 'anime-faces-96' / (
    'faces.zip')


def _print_report(title: str, report: dict) -> None:
  keys = ['coverage_mean', 'kl_mean', 'pair_coverage', 'joint_coverage',
          'joint_covered_mass', 'joint_kl', 'joint_size', 'distinct_fraction']
  print(f'  {title}: ' + ', '.join(
      f'{k} {report[k]:.4g}' for k in keys))


def run(name: str, data_config, image_size: int, num_samples: int,
        retrain: bool) -> None:
  config = attributes.get_default_classifier_config(data_config.source)
  print(f'\n== {name} ({data_config.source}'
        f'{", " + data_config.path if data_config.path else ""}), '
        f'{image_size}x{image_size}')
  print('  settings:', json.dumps(config.to_dict(), default=list))

  start = time.perf_counter()
  data = attributes.load_labelled(data_config, image_size)
  read_seconds = time.perf_counter() - start
  directory = attributes.cache_directory(data_config, data.fingerprint,
                                         image_size, config)
  if retrain and os.path.isdir(directory):
    shutil.rmtree(directory)
  start = time.perf_counter()
  classifier = attributes.train_or_load(data_config, image_size,
                                        config=config, data=data,
                                        log_every_steps=500)
  total_seconds = time.perf_counter() - start
  info = classifier.info
  print(f'  images {len(data.images)}, labelled '
        f'{int((data.labels != attributes.MISSING).any(axis=1).sum())}; '
        f'train {info["num_train"]}, held out {info["num_held_out"]}')
  print(f'  read {read_seconds:.1f} s; trained in {info["train_seconds"]:.1f} s '
        f'({config.num_steps} steps of {config.batch_size}); train_or_load '
        f'{total_seconds:.1f} s')
  start = time.perf_counter()
  classifier.predict(data.images[:10_000])
  seconds = time.perf_counter() - start
  print(f'  predict: {min(10_000, len(data.images)) / seconds:.0f} images/s')
  print('  held-out accuracy (commonest-class baseline):')
  for attr, acc in info['held_out_accuracy'].items():
    print(f'    {attr:12s} {acc:.4f}  ({info["majority_accuracy"][attr]:.4f})')
  print(f'  cache: {info["cache_directory"]}')

  num = min(num_samples, len(data.images) // 2)
  print(f'  subset for joint numbers: {info["default_subset"]}; N = {num}')
  floor = attributes.coverage_floor(classifier, num)
  _print_report(f'floor ({num} real vs the other {len(data.images) - num})',
                floor)
  print('    per attribute KL: ' + ', '.join(
      f'{a} {floor["kl/" + a]:.2g}' for a in classifier.attributes))
  collapsed = np.repeat(classifier.reference_labels[:1], num, axis=0)
  _print_report('one image repeated', coverage.coverage_report(
      collapsed, classifier.reference_labels, classifier.attributes,
      classifier.num_classes, info['default_subset']))
  if data_config.source == 'procedural':
    # Ground truth instead of predictions on both sides: the classifier's
    # own share of the floor.
    floor_true = coverage.real_floor(
        data.labels, classifier.attributes, classifier.num_classes, num,
        info['default_subset'])
    _print_report('floor with true labels', floor_true)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', choices=('all', 'procedural', 'faces'),
                      default='all')
  parser.add_argument('--image_size', type=int, default=48)
  parser.add_argument('--num_samples', type=int, default=10_000)
  parser.add_argument('--faces_zip', default=str(FACES_ZIP))
  parser.add_argument('--retrain', action='store_true',
                      help='train again even when a cached classifier exists')
  args = parser.parse_args()
  # absl (imported by tfds) owns the root logger: give ours its own handler.
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter('  %(message)s'))
  logger = logging.getLogger('dcgan.eval')
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False

  if args.dataset in ('all', 'procedural'):
    data_config = avatar.get_config().data
    run('built-in avatars', data_config, args.image_size, args.num_samples,
        args.retrain)
  if args.dataset in ('all', 'faces'):
    if not os.path.exists(args.faces_zip):
      print(f'\n== faces: skipped, {args.faces_zip} does not exist')
      return
    data_config = avatar.get_config().data
    data_config.source = 'folder'
    data_config.path = args.faces_zip
    run('real faces', data_config, args.image_size, args.num_samples,
        args.retrain)


if __name__ == '__main__':
  main()
