r"""Writes a report of a training run: what the generator learned.

  python -m experiments.report --workdir runs/a1

Writes `<workdir>/report/index.md` with progress.png (the fixed-latent grids
across training), progress.gif, losses.png, latent_walk.png and the
memorization check: neighbors_<space>.png, the nearest training images of
generated ones in pixel and discriminator feature space (and Inception's,
with the `eval` extra and --embedding=inception). Reads the run's training
images for the check: on the built-in avatars, their first use draws them
(about two minutes).
"""

from absl import app, flags

from dcgan import compile_cache, report
from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'A training workdir.',
                               required=True)
_OUT = flags.DEFINE_string('out', None, 'Report folder (default: '
                           '<workdir>/report).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step of the new '
                             'images (default: the latest).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the new images and of the '
                             'training subset.')
_NUM_TRAIN_IMAGES = flags.DEFINE_integer(
    'num_train_images', 5000, 'Training images searched for the nearest '
    'neighbours of generated ones; 0 skips the memorization check.',
    lower_bound=0)
_NUM_QUERIES = flags.DEFINE_integer(
    'num_queries', 8, 'Generated images shown with their neighbours.',
    lower_bound=1)
_NUM_NEIGHBORS = flags.DEFINE_integer(
    'num_neighbors', 5, 'Neighbours shown per generated image.',
    lower_bound=1)
_EMBEDDINGS = flags.DEFINE_multi_enum(
    'embedding', list(report.DEFAULT_EMBEDDINGS), list(report.EMBEDDINGS),
    'Feature spaces of the memorization check; repeat the flag for several. '
    'inception needs the eval extra and takes about 0.3 s per image on a '
    '2-core CPU: pair it with a smaller --num_train_images.')


def main(argv):
  cli.start(argv)
  with cli.user_errors():
    cli.check_output_folder(_OUT.value)
    compile_cache.enable_for_run(_WORKDIR.value)
    report.write_report(
        _WORKDIR.value, _OUT.value, step=_STEP.value, seed=_SEED.value,
        num_train_images=_NUM_TRAIN_IMAGES.value,
        num_queries=_NUM_QUERIES.value, num_neighbors=_NUM_NEIGHBORS.value,
        embeddings=_EMBEDDINGS.value)


if __name__ == '__main__':
  app.run(main)
