r"""Scores a run's generator: FID/KID/precision-recall, faces, mode coverage.

  python -m experiments.evaluate --workdir runs/a1                 # 10k samples
  python -m experiments.evaluate --workdir runs/a1 --num 2000 --step 5000
  python -m experiments.evaluate --workdir runs/a1 --real heldout  # the floor
  python -m experiments.evaluate --workdir runs/a1 --real faces.zip \
      --cascade ../shared/datasets/lbpcascade_animeface.xml

Prints a table and writes the whole result, with the protocol of every
number, to <workdir>/eval/<what>_n<num>.json. --real scores real images
instead of samples, against the same reference: 'heldout' takes training
images outside the reference subset (real vs real: the best a generator can
score with this many images), a path any folder or .zip of images.

Needs the eval extra (pip install -e '.[eval]'). The first evaluation of a
dataset computes its reference statistics and trains its attribute
classifier; both are cached beside the dataset.
"""

import logging
import sys

from absl import app, flags

from dcgan import compile_cache
from dcgan.eval import evaluate
from experiments import cli

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'A training workdir, its checkpoints/ folder or one '
    'checkpoint (checkpoints/<step>).', required=True)
_NUM = flags.DEFINE_integer('num', None, 'Images scored (default: '
                            'config.eval.num_samples, 10,000).', lower_bound=2)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the '
                             'latest).')
_REAL = flags.DEFINE_string(
    'real', None, "Score real images instead of samples: 'heldout' or the "
    'path of a folder or .zip of images.')
_NUM_REFERENCE = flags.DEFINE_integer(
    'num_reference', None, 'Training images of the reference statistics '
    '(default: config.eval.num_reference, 10,000).', lower_bound=2)
_CASCADE = flags.DEFINE_string(
    'cascade', None, 'lbpcascade_animeface.xml, for the face detection rate '
    "(default: config.eval.cascade_path; '' skips it).")
_COVERAGE = flags.DEFINE_bool(
    'coverage', None, 'Mode coverage from an attribute classifier (default: '
    'config.eval.coverage).')
_LABELS_CSV = flags.DEFINE_string(
    'labels_csv', None, 'Labels of a folder dataset for the classifier '
    '(default: labels.csv beside it).')
_SEED = flags.DEFINE_integer('seed', None, 'Seed of the samples\' latents.')


def main(argv):
  cli.start(argv)
  with cli.user_errors():
    compile_cache.enable_for_run(_WORKDIR.value)
    from dcgan import sampling  # pylint: disable=g-import-not-at-top
    from dcgan.eval import inception  # pylint: disable=g-import-not-at-top
    _, _, run_config, _ = sampling.load_generator(_WORKDIR.value, _STEP.value)
    eval_config = evaluate.resolve_eval_config(None, run_config)
    for flag, key in ((_NUM_REFERENCE, 'num_reference'),
                      (_CASCADE, 'cascade_path'), (_COVERAGE, 'coverage'),
                      (_LABELS_CSV, 'labels_csv'), (_SEED, 'seed')):
      if flag.value is not None:
        eval_config[key] = flag.value
    try:
      if _REAL.value:
        result = evaluate.evaluate_real(_WORKDIR.value, _REAL.value,
                                        eval_config, num=_NUM.value)
      else:
        result = evaluate.evaluate_generator(
            _WORKDIR.value, eval_config, step=_STEP.value, num=_NUM.value)
    except inception.MissingExtraError as error:
      sys.exit(f'Error: {error}')
    print(evaluate.format_table(result))
    path = evaluate.write_result(result, _workdir_root(_WORKDIR.value))
    logging.info('Wrote %s', path)


def _workdir_root(path: str) -> str:
  """The run's folder, also when given its checkpoints/ or one checkpoint."""
  from dcgan import sampling  # pylint: disable=g-import-not-at-top
  checkpoints, _ = sampling.find_checkpoints(path)
  return str(checkpoints.parent)


if __name__ == '__main__':
  app.run(main)
