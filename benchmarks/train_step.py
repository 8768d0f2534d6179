r"""Speed of the jitted training step (1 D update + G updates) on this machine.

  python benchmarks/train_step.py                       # the reference recipe
  python benchmarks/train_step.py --conv_impl=xla --conv_impl=matmul
  python benchmarks/train_step.py --batch_size=16 --batch_size=64 --image_size=64

Prints, per setting, the median over --repeats timed runs of --steps steps on a
constant batch: images/s, GFLOP/s, that rate as a share of the machine's fp32
GEMM rate (a 2048^3 `jnp.dot`, measured first in the same process), compile
seconds, and the process's peak RSS so far (settings run in order, so it only
grows: run one setting per process for each one's own peak).

FLOP counting rule (benchmarks/flops.py): 2 x multiply-adds of the conv and
dense layers the step runs. A forward pass counts 1x, a backward pass 2x (input
and weight gradients), 1x through D in a G update (input gradients only). The
tutorial's iteration is G fwd + D fwd/bwd on a real and a fake batch, then per
G update G fwd/bwd and D fwd/input-bwd, the first G update reusing the D
update's G fwd: 3 * g_steps G + (6 + 2 * g_steps) D forward passes (187.2
GFLOP at 48x48, batch 64).
"""

import itertools
import platform
import resource
import statistics
import sys
import time

import jax
from absl import app, flags

import flops
import reference_step
from dcgan import heap
from experiments.configs import avatar

_BATCH_SIZE = flags.DEFINE_multi_integer('batch_size', [64], 'Batch sizes.')
_IMAGE_SIZE = flags.DEFINE_multi_integer('image_size', [48], 'Image sizes.')
_CONV_IMPL = flags.DEFINE_multi_string('conv_impl', ['auto'],
                                       'Conv implementations.')
_DTYPE = flags.DEFINE_multi_string('dtype', ['float32'], 'Compute dtypes.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Steps per timed run.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per setting.')


def measure(config) -> dict[str, float]:
  state, step = reference_step.build(config)
  shape = (config.batch_size, config.image_size, config.image_size, 3)
  batch = {'image': jax.random.uniform(jax.random.key(1), shape, minval=-1,
                                       maxval=1)}
  rng = jax.random.key(2)

  compiled, compile_seconds = reference_step.compile_timed(step, state, batch,
                                                          rng)
  state, metrics = compiled(state, batch, rng)  # warm-up
  jax.block_until_ready(metrics)

  rates = []
  with heap.reuse_freed_memory():  # as the training loop runs
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        state, metrics = compiled(state, batch, rng)
      jax.block_until_ready((state, metrics))
      rates.append(_STEPS.value * config.batch_size /
                   (time.perf_counter() - start))
  images_per_second = statistics.median(rates)
  gflops = flops.iteration_flops(config) / 1e9
  return {
      'img/s': images_per_second,
      'min img/s': min(rates),
      'max img/s': max(rates),
      'GFLOP/iter': gflops,
      'GFLOP/s': gflops * images_per_second / config.batch_size,
      'compile s': compile_seconds,
  }


def main(argv):
  del argv
  print(f'# {platform.node()} {platform.processor() or platform.machine()}, '
        f'jax {jax.__version__}, backend {jax.default_backend()}, '
        f'{jax.device_count()} device(s): {jax.devices()[0].device_kind}')
  print(f'# median of {_REPEATS.value} runs x {_STEPS.value} steps; '
        'one step = 1 D + g_steps_per_d_step G updates')
  gemm = {d: reference_step.gemm_rate(d) / 1e9 for d in ('float32', 'bfloat16')}
  print(f"# GEMM 2048^3 jnp.dot, float32 result: fp32 {gemm['float32']:.0f} "
        f"GFLOP/s, bf16 inputs {gemm['bfloat16']:.0f} GFLOP/s")
  header = ('batch', 'size', 'conv', 'dtype', 'img/s', 'min', 'max',
            'GFLOP/it', 'GFLOP/s', '% fp32 GEMM', 'compile s', 'peak RSS MiB')
  print(' | '.join(header))
  for batch_size, image_size, impl, dtype in itertools.product(
      _BATCH_SIZE.value, _IMAGE_SIZE.value, _CONV_IMPL.value, _DTYPE.value):
    config = avatar.get_config()
    config.batch_size, config.image_size = batch_size, image_size
    config.model.conv_impl, config.model.dtype = impl, dtype
    r = measure(config)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{batch_size} | {image_size} | {impl} | {dtype} | "
          f"{r['img/s']:.1f} | {r['min img/s']:.1f} | {r['max img/s']:.1f} | "
          f"{r['GFLOP/iter']:.1f} | {r['GFLOP/s']:.1f} | "
          f"{100 * r['GFLOP/s'] / gemm['float32']:.0f}% | "
          f"{r['compile s']:.1f} | {rss:.0f}")
    sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
