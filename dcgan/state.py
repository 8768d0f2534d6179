"""The whole GAN's training state as one pytree."""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from dcgan import models

PyTree = Any


class GANState(struct.PyTreeNode):
  """Everything that changes during training; saved and restored as a unit.

  Attributes:
    step: int32 scalar, the number of training iterations done.
    rng: uint32 key data of the run's root training key; each step folds its
      step number into it, so a resumed run draws the same numbers.
    g_params, g_batch_stats, g_opt_state: the generator's parameters, BatchNorm
      running averages and Adam state.
    d_params, d_batch_stats, d_opt_state: the same for the discriminator.
  """
  step: jnp.ndarray
  rng: jnp.ndarray
  g_params: PyTree
  g_batch_stats: PyTree
  g_opt_state: optax.OptState
  d_params: PyTree
  d_batch_stats: PyTree
  d_opt_state: optax.OptState


def create_optimizers(config) -> tuple[optax.GradientTransformation,
                                       optax.GradientTransformation]:
  """Adam for G and D (the tutorial's: lr 2e-4, b1 0.5)."""
  def adam(learning_rate):
    return optax.adam(learning_rate, b1=config.adam_b1, b2=config.adam_b2,
                      eps=config.adam_eps)
  return adam(config.g_learning_rate), adam(config.d_learning_rate)


# Compiler options for the state's initialisation, which runs once a run.
# Most of its compilation is LLVM optimising the kernels (many of them random
# number generation) at its default level 3: 8.7 s of the reference config's
# compile, 3.5 s at level 2, with the same bits out (2 cores, jax 0.10.2;
# tests/test_state.py checks the bits). The training step keeps the default:
# there level 2 saved ~8% of the compile and changed the step's rounding.
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 2}


def create_state(config, generator: models.Generator,
                 discriminator: models.Discriminator,
                 g_tx: optax.GradientTransformation,
                 d_tx: optax.GradientTransformation) -> GANState:
  """Initialises a fresh state from `config.seed` (jitted: one dispatch)."""
  init = functools.partial(_init_state, config, generator, discriminator,
                           g_tx, d_tx)
  if isinstance(jnp.zeros(()), jax.core.Tracer):
    # Traced inside another computation (jax.jit, jax.eval_shape), which
    # compiles it, if at all, with its own options: a nested jit must not
    # have any.
    return init()
  return jax.jit(init, compiler_options=INIT_COMPILER_OPTIONS)()


def abstract_state(config) -> GANState:
  """The shapes and dtypes of `create_state`'s state under `config`.

  `jax.ShapeDtypeStruct`s, traced without computing anything: what a
  checkpoint of a run with this config holds.
  """
  generator, discriminator = models.create_models(config.model,
                                                  config.image_size)
  g_tx, d_tx = create_optimizers(config)
  return jax.eval_shape(lambda: create_state(config, generator, discriminator,
                                             g_tx, d_tx))


def _init_state(config, generator, discriminator, g_tx, d_tx) -> GANState:
  root = jax.random.key(config.seed)
  g_rng, d_rng, train_rng = jax.random.split(jax.random.fold_in(root, 0), 3)
  latents = jnp.zeros((1, config.latent_dim), jnp.float32)
  images = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
  g_vars = flax.core.unfreeze(generator.init(g_rng, latents, train=False))
  d_vars = flax.core.unfreeze(discriminator.init(d_rng, images, train=False))
  return GANState(
      step=jnp.zeros((), jnp.int32),
      rng=jax.random.key_data(train_rng),
      g_params=g_vars['params'],
      g_batch_stats=g_vars['batch_stats'],
      g_opt_state=g_tx.init(g_vars['params']),
      d_params=d_vars['params'],
      d_batch_stats=d_vars['batch_stats'],
      d_opt_state=d_tx.init(d_vars['params']),
  )
