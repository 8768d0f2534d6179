"""benchmarks/torch_reference.py: the order of the rounds and the ratios.

The comparison itself needs PyTorch (the `bench` extra) and minutes of a
quiet machine; these are the parts that decide what it prints.
"""

import importlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                'benchmarks'))
torch_reference = importlib.import_module('torch_reference')


def test_rounds_start_with_each_variant_in_turn():
  variants = ['jax-float32', 'jax-bfloat16', 'torch-float32-nhwc']
  orders = [torch_reference.in_turn(variants, r) for r in range(6)]
  assert orders[0] == variants
  assert orders[1] == ['jax-bfloat16', 'torch-float32-nhwc', 'jax-float32']
  assert orders[3] == orders[0] and orders[4] == orders[1]
  # Every round runs every variant once; each opens a round in turn.
  assert all(sorted(o) == sorted(variants) for o in orders)
  assert [o[0] for o in orders[:3]] == variants
  # As many orders as variants, then the same again.
  assert len({tuple(o) for o in orders}) == 3


def test_ratio_text_gives_the_median_and_the_quartiles():
  per_round = [1.0, 0.9, 1.2, 1.1, 1.05]
  # Quartiles between the 1st/2nd and the 4th/5th of the sorted five.
  assert torch_reference.ratio_text(per_round) == '1.05x (0.95-1.15)'
  assert torch_reference.ratio_text(per_round, quartiles=False) == '1.05x'
  # Too few rounds for quartiles.
  assert torch_reference.ratio_text([0.97, 1.01, 0.99]) == '0.99x'
