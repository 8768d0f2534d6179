r"""How long the training step's matrix products take on their own.

  python benchmarks/gemm_floor.py --dtype=float32 --dtype=bfloat16

Compiles the reference step (batch 64, 48x48 unless told otherwise), reads the
dots XLA kept from the optimized HLO, and times each distinct one alone: a
jitted `dot_general` of the same shapes, dtypes and contracting dimensions,
median of --repeats runs of back-to-back calls (about 20 ms each). Prints
each shape with its count, then the dots' total GFLOP, the sum of their times
alone (the GEMM floor: what the step would take if nothing else ran) and the
step's own time (median of --repeats runs of 3 steps), all inside
`heap.reuse_freed_memory()` as the training loop runs. A floor near another
implementation's whole step means only faster GEMMs or fewer multiplications
(such as the taps that read zero padding), not less work around them, could
beat it.
"""

import collections
import platform
import re

import jax
import jax.numpy as jnp
from absl import app, flags

import reference_step
from dcgan import heap
from experiments.configs import avatar

_HLO_DTYPES = {'f32': jnp.float32, 'bf16': jnp.bfloat16, 'f16': jnp.float16}
RUN_SECONDS = 0.02  # a timed run of back-to-back calls of one dot


def _dims(text: str) -> tuple[int, ...]:
  return tuple(int(d) for d in text.split(',') if d)


def hlo_dots(hlo: str) -> collections.Counter:
  """{(lhs, rhs, lhs_contracting, rhs_contracting): count} of the dots run.

  lhs and rhs are (HLO dtype, shape). A dot inside a fusion counts once per
  call of that fusion.
  """
  bodies = reference_step.hlo_computations(hlo)
  calls = collections.Counter(re.findall(r'calls=%?([\w.\-]+)', hlo))
  calls.update(e for e in bodies if hlo.find(f'ENTRY %{e} ') >= 0)
  dots = collections.Counter()
  for body, lines in bodies.items():
    shapes = {}
    for line in lines:
      m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\]', line)
      if m:
        shapes[m.group(1)] = (m.group(2), _dims(m.group(3)))
    for line in lines:
      m = re.search(r' dot\(%?([\w.\-]+), %?([\w.\-]+)\)', line)
      if m and calls[body]:
        lc = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', line).group(1)
        rc = re.search(r'rhs_contracting_dims=\{([\d,]*)\}', line).group(1)
        key = (shapes[m.group(1)], shapes[m.group(2)], _dims(lc), _dims(rc))
        dots[key] += calls[body]
  return dots


def calls_per_run(seconds_once: float) -> int:
  """Back-to-back calls that make a timed run of about RUN_SECONDS."""
  return max(1, round(RUN_SECONDS / seconds_once))


def time_dot(lhs, rhs, lc, rc, repeats: int) -> tuple[float, float]:
  """(median seconds, FLOP) of one dot_general alone, float32 accumulation.

  Timed in runs of back-to-back calls lasting about RUN_SECONDS, as XLA runs
  the step's dots one after another: a single call timed on its own also
  counts Python's dispatch and the thread pool's wake-up, which on 2 cores
  took a (384, 512) x (512, 512) bf16 dot from 0.55 to 0.98 ms.
  """
  x = jnp.ones(lhs[1], _HLO_DTYPES[lhs[0]])
  y = jnp.ones(rhs[1], _HLO_DTYPES[rhs[0]])
  dot = jax.jit(lambda x, y: jax.lax.dot_general(
      x, y, ((lc, rc), ((), ())), preferred_element_type=jnp.float32))
  out = dot(x, y)  # held while timing, as before each timed call
  calls = calls_per_run(reference_step.median_seconds(
      lambda: dot(x, y).block_until_ready(), 3))

  def run():
    for _ in range(calls):
      result = dot(x, y)
    result.block_until_ready()

  seconds = reference_step.median_seconds(run, repeats) / calls
  contracted = 1
  for d in lc:
    contracted *= lhs[1][d]
  return seconds, 2 * out.size * contracted


def step_seconds(state, step, batch, rng, repeats: int) -> float:
  """Median seconds of one step, timed in runs of 3."""
  def three_steps():
    nonlocal state
    for _ in range(3):
      state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)

  return reference_step.median_seconds(three_steps, repeats) / 3


def main(argv):
  del argv
  print(f'# {platform.node()} {platform.processor() or platform.machine()}, '
        f'jax {jax.__version__}, backend {jax.default_backend()}')
  args = flags.FLAGS
  for dtype in args.dtype:
    config = avatar.get_config()
    config.batch_size, config.image_size = args.batch_size, args.image_size
    config.model.dtype = dtype
    state, step = reference_step.build(config)
    shape = (config.batch_size, config.image_size, config.image_size, 3)
    batch = {'image': jnp.zeros(shape, jnp.float32)}
    rng = jax.random.key(0)
    dots = hlo_dots(step.lower(state, batch, rng).compile().as_text())
    with heap.reuse_freed_memory():
      total_seconds = total_flops = 0.0
      print(f'\n## {dtype}, batch {config.batch_size}, '
            f'{config.image_size}x{config.image_size}')
      print('count | lhs | rhs | contracting | ms alone | GFLOP/s')
      for (lhs, rhs, lc, rc), count in dots.most_common():
        seconds, flop = time_dot(lhs, rhs, lc, rc, args.repeats)
        total_seconds += count * seconds
        total_flops += count * flop
        print(f'{count} | {lhs[0]}{list(lhs[1])} | {rhs[0]}{list(rhs[1])} | '
              f'{list(lc)}, {list(rc)} | {seconds * 1e3:.2f} | '
              f'{flop / seconds / 1e9:.0f}')
      step_time = step_seconds(state, step, batch, rng, args.repeats)
    print(f'{sum(dots.values())} dots, {total_flops / 1e9:.1f} GFLOP; '
          f'alone they take {total_seconds * 1e3:.0f} ms; the step takes '
          f'{step_time * 1e3:.0f} ms ({config.batch_size / step_time:.1f} '
          f'img/s): GEMMs alone are {total_seconds / step_time:.0%} of it')


if __name__ == '__main__':
  # Defined only when run: the tests import this module beside others
  # (torch_reference, layer_times) whose flags share these names.
  flags.DEFINE_multi_string('dtype', ['float32'], 'Compute dtypes.')
  flags.DEFINE_integer('batch_size', 64, 'Batch size.')
  flags.DEFINE_integer('image_size', 48, 'Image size.')
  flags.DEFINE_integer('repeats', 7, 'Timed runs of each dot.')
  app.run(main)
