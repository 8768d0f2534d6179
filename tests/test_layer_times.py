"""benchmarks/layer_times.py: reading the compiled step and sharing its time."""

import importlib
import os
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                'benchmarks'))
layer_times = importlib.import_module('layer_times')


def test_hlo_ops_names_the_layer_and_finds_the_matmuls():
  def loss(x, w):
    with jax.named_scope('Discriminator'), jax.named_scope('conv1'):
      return jnp.sum(jnp.tanh(x @ w))

  x, w = jnp.ones((64, 128)), jnp.ones((128, 96))
  hlo = jax.jit(jax.grad(loss)).lower(x, w).compile().as_text()
  ops = layer_times._hlo_ops(hlo)  # pylint: disable=protected-access
  layer_of = layer_times._layer_of  # pylint: disable=protected-access
  # The forward matmul and the input gradient's, each in the layer.
  matmuls = sorted(('transpose(' in op_name, layer_of(op_name))
                   for op_name, matmul in ops.values() if matmul)
  assert (False, 'D conv1') in matmuls and (True, 'D conv1') in matmuls
  others = {layer_of(op_name)
            for op_name, matmul in ops.values() if not matmul and op_name}
  assert 'D conv1' in others  # tanh and its gradient


@pytest.mark.parametrize('op_name, layer', [
    ('jit(train_step)/jvp(Discriminator)/conv1/conv1._apply/dot_general',
     'D conv1'),
    ('jit(train_step)/transpose(jvp(Generator))/deconv3/deconv3._apply/stack',
     'G deconv3'),
    ('jit(train_step)/jvp(Generator)/bn0/sub', 'G bn0'),
    ('jit(train_step)/add', 'rest'),
    ('', 'rest'),
])
def test_layer_of(op_name, layer):
  layer_of = layer_times._layer_of  # pylint: disable=protected-access
  assert layer_of(op_name) == layer


def test_overlapping_time_is_shared_and_sums_to_the_busy_time():
  spans = [(0, 10, 'a'), (4, 8, 'b'), (12, 14, 'c')]
  charged = layer_times.share_wall_time(spans, lambda name: name)
  # 0-4 a; 4-8 a and b (2 each); 8-10 a; 12-14 c; the gap 10-12 is nobody's
  assert charged == {'a': 4 + 2 + 2, 'b': 2, 'c': 2}
  assert sum(charged.values()) == 12
