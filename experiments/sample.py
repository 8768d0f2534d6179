r"""Writes generated avatars from a run's latest checkpoint.

  python -m experiments.sample --workdir runs/a1 --num 64 --out out/

Writes `<out>/<i>.png` for each image and `<out>/grid.png`. Needs no dataset.
"""


import jax
import numpy as np
from absl import app, flags, logging
from etils import epath

from dcgan import images, sampling
from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'A training workdir.',
                               required=True)
_OUT = flags.DEFINE_string('out', None, 'Output folder (default: '
                           '<workdir>/generated).')
_NUM = flags.DEFINE_integer('num', 64, 'How many images.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the latents.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the '
                             'latest).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Images per G call.',
                                   lower_bound=1)


def main(argv):
  cli.start(argv)
  with cli.user_errors():
    generator, variables, config, step = sampling.load_generator(
        _WORKDIR.value, _STEP.value)
  latents = sampling.sample_latents(jax.random.key(_SEED.value), _NUM.value,
                                    config.latent_dim, config.latent_dist)
  generate = jax.jit(lambda z: generator.apply(variables, z, train=False))
  pixels = np.concatenate([
      sampling.to_uint8(generate(latents[i:i + _BATCH_SIZE.value]))
      for i in range(0, _NUM.value, _BATCH_SIZE.value)])
  out = epath.Path(_OUT.value or epath.Path(_WORKDIR.value) / 'generated')
  for i, image in enumerate(pixels):
    images.save_png(image, out / f'{i}.png')
  images.save_png(images.make_grid(pixels), out / 'grid.png')
  logging.info('Wrote %d images and grid.png from step %d to %s',
               len(pixels), step, out)


if __name__ == '__main__':
  app.run(main)
