"""What the speed benchmarks share: the jitted training step, the GEMM rate,
a median timer and the computations of compiled HLO text.

Imported as a sibling module (`import reference_step`) by the scripts in this
folder, which run from the repository root as `python benchmarks/<name>.py`.
"""

import functools
import re
import statistics
import time

import jax

from dcgan import models, train
from dcgan import state as state_lib


def build(config):
  """(initial GANState, jitted train_step) of `config`, as the loop makes them."""
  generator, discriminator = models.create_models(config.model,
                                                  config.image_size)
  g_tx, d_tx = state_lib.create_optimizers(config)
  state = state_lib.create_state(config, generator, discriminator, g_tx, d_tx)
  step = train.jit_train_step(
      train.make_train_step(config, generator, discriminator, g_tx, d_tx))
  return state, step


def compile_timed(jitted, *args):
  """(jitted lowered and compiled for `args`, the seconds that took)."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def gemm_rate(dtype: str, n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of an n^3 `jnp.dot` of `dtype` inputs, median of `repeats`.

  The product accumulates and returns float32, as the model's matmuls do
  (`dcgan.layers`); a bfloat16 result is a slower path of XLA:CPU.
  """
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  matmul = jax.jit(functools.partial(jax.numpy.dot,
                                     preferred_element_type='float32'))
  return 2 * n**3 / median_seconds(
      lambda: matmul(a, a).block_until_ready(), repeats)


def median_seconds(run, repeats: int) -> float:
  """Median wall-clock seconds of `run()` over `repeats` calls, after one
  untimed call (compilation, first touch of the output's memory)."""
  run()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def hlo_computations(hlo: str) -> dict[str, list[str]]:
  """{computation name: its instruction lines} of compiled HLO text."""
  bodies, name = {}, None
  for line in hlo.splitlines():
    header = re.match(r'^(?:ENTRY )?%?([\w.\-]+) .*\{$', line)
    if header:
      name = header.group(1)
      bodies[name] = []
    elif name:
      bodies[name].append(line)
  return bodies
