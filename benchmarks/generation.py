r"""Speed of sample generation: eval-mode G, latents to uint8 pixels.

  python benchmarks/generation.py
  python benchmarks/generation.py --conv_impl=xla --conv_impl=matmul \
      --dtype=float32 --dtype=bfloat16
  python benchmarks/generation.py --chunk_size=0 --chunk_size=32

Prints, per setting, the median over --repeats timed runs of --batches batches
of --batch_size samples (G runs --chunk_size latents at a time, 0: the whole
batch at once; `sampling.generate`): samples/s, GFLOP/s (2 x multiply-adds of
G's forward pass, as in train_step.py) and compile seconds. The images are
copied to the host as uint8, so the figure is what a user who saves samples
gets; freed memory is kept between batches, as `dcgan.sampling` does
(`dcgan.heap`).
"""

import itertools
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import flops
import reference_step
from dcgan import heap, models, sampling
from dcgan import state as state_lib
from experiments.configs import avatar

_BATCH_SIZE = flags.DEFINE_multi_integer('batch_size', [500], 'Batch sizes.')
_IMAGE_SIZE = flags.DEFINE_multi_integer('image_size', [48], 'Image sizes.')
_CONV_IMPL = flags.DEFINE_multi_string('conv_impl', ['auto'],
                                       'Conv implementations.')
_DTYPE = flags.DEFINE_multi_string('dtype', ['float32'], 'Compute dtypes.')
_CHUNK_SIZE = flags.DEFINE_multi_integer(
    'chunk_size', [sampling.GENERATE_CHUNK],
    'Latents per pass of G within a batch (0: the whole batch).')
_BATCHES = flags.DEFINE_integer('batches', 4, 'Batches per timed run.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per setting.')


def measure(config, chunk_size: int | None) -> dict[str, float]:
  generator, discriminator = models.create_models(config.model,
                                                  config.image_size)
  g_tx, d_tx = state_lib.create_optimizers(config)
  state = state_lib.create_state(config, generator, discriminator, g_tx, d_tx)

  @jax.jit
  def generate_uint8(g_params, g_batch_stats, rng):
    latents = sampling.sample_latents(rng, config.batch_size,
                                      config.latent_dim, config.latent_dist)
    images = sampling.generate(generator, g_params, g_batch_stats, latents,
                               chunk_size)
    return jnp.clip(jnp.round((images + 1) * 127.5), 0, 255).astype(jnp.uint8)

  args = (state.g_params, state.g_batch_stats)
  compiled, compile_seconds = reference_step.compile_timed(
      generate_uint8, *args, jax.random.key(0))
  np.asarray(compiled(*args, jax.random.key(0)))  # warm-up

  rates = []
  with heap.reuse_freed_memory():  # as dcgan.sampling generates
    for r in range(_REPEATS.value):
      start = time.perf_counter()
      for i in range(_BATCHES.value):
        np.asarray(compiled(*args, jax.random.key(r * 1000 + i)))
      rates.append(_BATCHES.value * config.batch_size /
                   (time.perf_counter() - start))
  samples_per_second = statistics.median(rates)
  g_flops, _ = flops.forward_flops(config)
  return {
      'samples/s': samples_per_second,
      'min': min(rates),
      'max': max(rates),
      'GFLOP/s': g_flops / 1e9 * samples_per_second / config.batch_size,
      'compile s': compile_seconds,
  }


def main(argv):
  del argv
  print(f'# {platform.node()} {platform.processor() or platform.machine()}, '
        f'jax {jax.__version__}, backend {jax.default_backend()}, '
        f'{jax.device_count()} device(s): {jax.devices()[0].device_kind}')
  print(f'# median of {_REPEATS.value} runs x {_BATCHES.value} batches; '
        'eval-mode G, uint8 copied to the host')
  print(' | '.join(('batch', 'chunk', 'size', 'conv', 'dtype', 'samples/s',
                    'min', 'max', 'GFLOP/s', 'compile s')))
  for batch_size, chunk_size, image_size, impl, dtype in itertools.product(
      _BATCH_SIZE.value, _CHUNK_SIZE.value, _IMAGE_SIZE.value,
      _CONV_IMPL.value, _DTYPE.value):
    config = avatar.get_config()
    config.batch_size, config.image_size = batch_size, image_size
    config.model.conv_impl, config.model.dtype = impl, dtype
    r = measure(config, chunk_size or None)
    print(f"{batch_size} | {chunk_size or batch_size} | {image_size} | "
          f"{impl} | {dtype} | "
          f"{r['samples/s']:.0f} | {r['min']:.0f} | {r['max']:.0f} | "
          f"{r['GFLOP/s']:.1f} | {r['compile s']:.1f}")
    sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
