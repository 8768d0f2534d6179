r"""Writes generated avatars from a run's checkpoint.

  python -m experiments.sample --workdir runs/a1 --num 64 --out out/
  python -m experiments.sample --workdir runs/a1 --truncation 0.5 --grid_only
  python -m experiments.sample --workdir runs/a1 --num 8 --interpolate 10

Writes `<out>/<i>.png` for each image and `<out>/grid.png` (only the grid with
--grid_only). With --interpolate N it writes latent walks instead: walk.png,
one row of N frames per image, from the latents of --seed to those of
--end_seed, and walk.gif, the grids of the N frames there and back. Needs no
dataset. --workdir also takes a checkpoints/ folder or checkpoints/<step>.
"""

import logging

import jax
from absl import app, flags
from etils import epath

from dcgan import compile_cache, images, plots, sampling
from experiments import cli

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'A training workdir, its checkpoints/ folder or one '
    'checkpoint (checkpoints/<step>).', required=True)
_OUT = flags.DEFINE_string('out', None, 'Output folder (default: '
                           'generated/ next to checkpoints/).')
_NUM = flags.DEFINE_integer('num', 64, 'How many images (or walks).',
                            lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the latents.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the '
                             'latest).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Images per G call.',
                                   lower_bound=1)
_TRUNCATION = flags.DEFINE_float(
    'truncation', None, 'Draw each latent coordinate from the prior '
    'conditioned on |z_i| <= this (e.g. 0.5): less varied, cleaner faces. '
    'Default: no truncation.', lower_bound=1e-6)
_GRID_ONLY = flags.DEFINE_bool('grid_only', False, 'Write grid.png alone.')
_INTERPOLATE = flags.DEFINE_integer(
    'interpolate', None, 'Write latent walks of this many frames (>= 2) '
    'instead of single images.', lower_bound=2)
_END_SEED = flags.DEFINE_integer(
    'end_seed', None, 'Seed of the walks\' end latents (default: --seed + 1).')
_INTERPOLATION = flags.DEFINE_enum(
    'interpolation', 'slerp', sampling.INTERPOLATIONS,
    'slerp (spherical, keeps the latents\' norm) or lerp (straight line).')


def main(argv):
  cli.start(argv)
  with cli.user_errors():
    cli.check_output_folder(_OUT.value)
    compile_cache.enable_for_run(_WORKDIR.value)
    generator, variables, config, step = sampling.load_generator(
        _WORKDIR.value, _STEP.value)
    # Next to checkpoints/, whichever folder --workdir named.
    workdir = sampling.find_checkpoints(_WORKDIR.value)[0].parent
  out = epath.Path(_OUT.value or workdir / 'generated')

  def latents_of(seed):
    return sampling.sample_latents(jax.random.key(seed), _NUM.value,
                                   config.latent_dim, config.latent_dist,
                                   _TRUNCATION.value)

  if _INTERPOLATE.value:
    end_seed = (_SEED.value + 1 if _END_SEED.value is None
                else _END_SEED.value)
    num_frames = _INTERPOLATE.value
    path = sampling.interpolate(latents_of(_SEED.value), latents_of(end_seed),
                                num_frames, _INTERPOLATION.value)
    pixels = sampling.generate_images(
        generator, variables, path.reshape(-1, config.latent_dim),
        _BATCH_SIZE.value).reshape((num_frames, _NUM.value) +
                                   (config.image_size, config.image_size, 3))
    images.save_png(plots.walk_figure(pixels), out / 'walk.png')
    grids = [images.make_grid(frame) for frame in pixels]
    images.save_gif(grids + grids[-2:0:-1], out / 'walk.gif', frame_ms=120)
    logging.info('Wrote walk.png and walk.gif (%d walks of %d frames, %s, '
                 'seeds %d to %d) from step %d to %s', _NUM.value, num_frames,
                 _INTERPOLATION.value, _SEED.value, end_seed, step, out)
    return

  pixels = sampling.generate_images(generator, variables,
                                    latents_of(_SEED.value),
                                    _BATCH_SIZE.value)
  if not _GRID_ONLY.value:
    for i, image in enumerate(pixels):
      images.save_png(image, out / f'{i}.png')
  images.save_png(images.make_grid(pixels), out / 'grid.png')
  logging.info('Wrote %s from step %d to %s',
               'grid.png' if _GRID_ONLY.value else
               f'{len(pixels)} images and grid.png', step, out)


if __name__ == '__main__':
  app.run(main)
