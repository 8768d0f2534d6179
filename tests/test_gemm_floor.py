"""benchmarks/gemm_floor.py: finding the step's dots and timing one alone."""

import importlib
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                'benchmarks'))
gemm_floor = importlib.import_module('gemm_floor')


def test_hlo_dots_counts_the_forward_and_gradient_matmuls():
  def loss(x, w):
    return jnp.sum(jnp.tanh(x @ w))

  x, w = jnp.ones((64, 128)), jnp.ones((128, 96))
  hlo = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(
      x, w).compile().as_text()
  dots = gemm_floor.hlo_dots(hlo)
  # The forward product and the two gradients: 3 dots of 64 x 128 x 96.
  assert sum(dots.values()) == 3
  for (lhs, rhs, lc, rc), count in dots.items():
    assert lhs[0] == rhs[0] == 'f32'
    assert [lhs[1][d] for d in lc] == [rhs[1][d] for d in rc]
    assert count >= 1 and set(lhs[1] + rhs[1]) == {64, 96, 128}


def test_time_dot_counts_flops():
  seconds, flop = gemm_floor.time_dot(('bf16', (96, 64)), ('bf16', (48, 64)),
                                      (1,), (1,), repeats=3)
  assert flop == 2 * 96 * 48 * 64
  assert 0 < seconds < 1


def test_small_dots_run_back_to_back():
  # A dot of 1 ms runs 20 times in a timed run, one of a second once.
  assert gemm_floor.calls_per_run(gemm_floor.RUN_SECONDS / 20) == 20
  assert gemm_floor.calls_per_run(1.0) == 1
  assert gemm_floor.calls_per_run(1e-9) > 1000
