"""The fresh training state."""

import functools

import jax
import numpy as np

from dcgan import models
from dcgan import state as state_lib


def _modules(config):
  """The arguments of `create_state` for `config`."""
  generator, discriminator = models.create_models(config.model,
                                                  config.image_size)
  return (config, generator, discriminator,
          *state_lib.create_optimizers(config))


def _leaves(tree):
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_init_compiled_for_speed_gives_the_fully_optimised_bits(tiny_config):
  modules = _modules(tiny_config)
  assert state_lib.INIT_COMPILER_OPTIONS  # else this compares a thing to itself
  fast = _leaves(state_lib.create_state(*modules))
  full = _leaves(jax.jit(functools.partial(state_lib._init_state, *modules))())
  assert fast.keys() == full.keys() and len(fast) > 50
  for key in fast:
    np.testing.assert_array_equal(fast[key], full[key], err_msg=key)
  # Real draws, not constants: the weights start from N(0, 0.02).
  assert 0.015 < fast[".g_params['deconv1']['kernel']"].std() < 0.025


def test_init_also_traces_inside_other_computations(tiny_config):
  # `abstract_state` traces it inside jax.eval_shape, for the shapes of a
  # state to restore into or to compare with a checkpoint's.
  abstract = state_lib.abstract_state(tiny_config)
  concrete = state_lib.create_state(*_modules(tiny_config))
  assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
  for a, c in zip(jax.tree.leaves(abstract), jax.tree.leaves(concrete)):
    assert (a.shape, a.dtype) == (c.shape, c.dtype)
