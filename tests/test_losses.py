"""Loss invariants, checked through jax.jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcgan import losses

d_loss = jax.jit(losses.discriminator_loss)
g_loss = jax.jit(losses.generator_loss, static_argnames='kind')


def test_zero_logits_give_log2_per_term_and_log4_for_d():
  zeros = jnp.zeros(16)
  total, terms = d_loss(zeros, zeros)
  np.testing.assert_allclose(terms['d_loss_real'], math.log(2), rtol=1e-6)
  np.testing.assert_allclose(terms['d_loss_fake'], math.log(2), rtol=1e-6)
  # D = 1/2 everywhere is the optimum of the game: D loss log 4.
  np.testing.assert_allclose(total, math.log(4), rtol=1e-6)
  np.testing.assert_allclose(g_loss(zeros), math.log(2), rtol=1e-6)
  np.testing.assert_allclose(g_loss(zeros, kind='minimax'), -math.log(2),
                             rtol=1e-6)


def test_losses_match_the_probability_formulas():
  real = jnp.array([-2.0, 0.5, 3.0])
  fake = jnp.array([1.0, -0.3, -4.0])
  d_real, d_fake = jax.nn.sigmoid(real), jax.nn.sigmoid(fake)
  total, terms = d_loss(real, fake)
  np.testing.assert_allclose(terms['d_loss_real'], -jnp.mean(jnp.log(d_real)),
                             rtol=1e-5)
  np.testing.assert_allclose(terms['d_loss_fake'],
                             -jnp.mean(jnp.log(1 - d_fake)), rtol=1e-5)
  np.testing.assert_allclose(total, terms['d_loss_real'] +
                             terms['d_loss_fake'], rtol=1e-6)
  np.testing.assert_allclose(g_loss(fake), -jnp.mean(jnp.log(d_fake)),
                             rtol=1e-5)
  np.testing.assert_allclose(g_loss(fake, kind='minimax'),
                             jnp.mean(jnp.log(1 - d_fake)), rtol=1e-5)


def test_losses_are_finite_for_extreme_logits():
  big = jnp.array([-1e4, 1e4])
  total, _ = d_loss(big, big)
  assert np.isfinite(total) and np.isfinite(g_loss(big))
  grads = jax.grad(lambda x: d_loss(x, x)[0])(big)
  assert np.all(np.isfinite(grads))


def test_non_saturating_gradient_does_not_vanish_when_d_wins():
  # D confidently rejects the fakes: the minimax gradient vanishes, the
  # non-saturating one does not (the reason the tutorial uses it).
  fake = jnp.full(4, -10.0)
  ns = jax.grad(lambda x: g_loss(x))(fake)
  mm = jax.grad(lambda x: g_loss(x, kind='minimax'))(fake)
  assert np.all(np.abs(ns) > 0.2) and np.all(np.abs(mm) < 1e-4)


def test_unknown_generator_loss_is_refused():
  with pytest.raises(ValueError, match='non_saturating'):
    losses.generator_loss(jnp.zeros(2), kind='hinge')
