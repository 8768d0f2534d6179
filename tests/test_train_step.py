"""Invariants of the jitted training step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcgan import models, sampling, train
from dcgan import state as state_lib


def _setup(config):
  generator, discriminator = models.create_models(config.model,
                                                  config.image_size)
  g_tx, d_tx = state_lib.create_optimizers(config)
  state = state_lib.create_state(config, generator, discriminator, g_tx, d_tx)
  return (generator, discriminator, g_tx, d_tx), state


def _batch(config, seed=0):
  shape = (config.batch_size, config.image_size, config.image_size, 3)
  return {'image': jax.random.uniform(jax.random.key(seed), shape,
                                      minval=-1.0, maxval=1.0)}


def _rng(state):
  return jax.random.wrap_key_data(jnp.array(state.rng, copy=True))


def _trees_equal(a, b):
  return all(jax.tree.leaves(jax.tree.map(
      lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


def _all_differ(a, b):
  return all(jax.tree.leaves(jax.tree.map(
      lambda x, y: bool(jnp.any(x != y)), a, b)))


def test_d_update_leaves_g_params_and_g_update_leaves_d_params(tiny_config):
  modules, state = _setup(tiny_config)
  updates = train.make_updates(tiny_config, *modules)
  latents = sampling.sample_latents(jax.random.key(1), tiny_config.batch_size,
                                    tiny_config.latent_dim)
  after_d, metrics = jax.jit(updates.d_update)(
      state, _batch(tiny_config)['image'], latents)
  assert _all_differ(state.d_params, after_d.d_params)
  assert _trees_equal(state.g_params, after_d.g_params)
  assert _trees_equal(state.g_opt_state, after_d.g_opt_state)
  assert set(metrics) >= {'d_loss', 'd_loss_real', 'd_loss_fake', 'd_real',
                          'd_fake', 'd_grad_norm'}

  after_g, metrics = jax.jit(updates.g_update)(after_d, latents)
  assert _all_differ(after_d.g_params, after_g.g_params)
  assert _trees_equal(after_d.d_params, after_g.d_params)
  assert _trees_equal(after_d.d_opt_state, after_g.d_opt_state)
  # D runs in train mode during the G update: its running averages move.
  assert _all_differ(after_d.d_batch_stats, after_g.d_batch_stats)
  assert set(metrics) == {'g_loss', 'g_grad_norm'}


def test_step_is_one_d_update_then_g_updates_on_the_same_latents(
    tiny_config):
  modules, state = _setup(tiny_config)
  updates = jax.tree.map(jax.jit, train.make_updates(tiny_config, *modules))
  batch = _batch(tiny_config)
  rng = _rng(state)
  step_rng = jax.random.fold_in(rng, state.step)
  latents = sampling.sample_latents(
      jax.random.split(step_rng, 1 + tiny_config.g_steps_per_d_step)[0],
      tiny_config.batch_size, tiny_config.latent_dim)
  expected, _ = updates.d_update(state, batch['image'], latents)
  for _ in range(tiny_config.g_steps_per_d_step):
    expected, g_metrics = updates.g_update(expected, latents)

  step = jax.jit(train.make_train_step(tiny_config, *modules))
  got, metrics = step(state, batch, rng)
  assert int(got.step) == 1
  for name in ('g_params', 'd_params', 'g_batch_stats', 'd_batch_stats'):
    np.testing.assert_allclose(
        jax.flatten_util.ravel_pytree(getattr(got, name))[0],
        jax.flatten_util.ravel_pytree(getattr(expected, name))[0],
        rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(metrics['g_loss'], g_metrics['g_loss'],
                             rtol=1e-5)


def test_g_reuse_latents_option_changes_the_g_updates(tiny_config):
  modules, state = _setup(tiny_config)
  batch = _batch(tiny_config)
  reuse = jax.jit(train.make_train_step(tiny_config, *modules))(
      state, batch, _rng(state))[0]
  tiny_config.g_reuse_latents = False
  fresh = jax.jit(train.make_train_step(tiny_config, *modules))(
      state, batch, _rng(state))[0]
  # Same D update (same latents), different G updates.
  assert _trees_equal(reuse.d_params, fresh.d_params)
  assert _all_differ(reuse.g_params, fresh.g_params)


@pytest.mark.parametrize('g_steps', [1, 3])
def test_g_steps_per_d_step(tiny_config, g_steps):
  tiny_config.g_steps_per_d_step = g_steps
  modules, state = _setup(tiny_config)
  state, _ = jax.jit(train.make_train_step(tiny_config, *modules))(
      state, _batch(tiny_config), _rng(state))
  # Adam counts its updates: G's count is the number of G updates.
  assert int(state.g_opt_state[0].count) == g_steps
  assert int(state.d_opt_state[0].count) == 1


def test_step_compiles_once_and_stays_finite(tiny_config):
  modules, state = _setup(tiny_config)
  step = train.jit_train_step(train.make_train_step(tiny_config, *modules))
  rng = _rng(state)
  for i in range(4):
    state, metrics = step(state, _batch(tiny_config, seed=i), rng)
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 4
  metrics = jax.device_get(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  assert 0.0 < metrics['d_real'] < 1.0 and 0.0 < metrics['d_fake'] < 1.0
  np.testing.assert_allclose(
      metrics['d_loss'], metrics['d_loss_real'] + metrics['d_loss_fake'],
      rtol=1e-6)


def test_latents_follow_config_distribution():
  rng = jax.random.key(0)
  uniform = sampling.sample_latents(rng, 4096, 100, 'uniform')
  assert uniform.shape == (4096, 100)
  assert float(uniform.min()) >= -1.0 and float(uniform.max()) <= 1.0
  assert abs(float(uniform.std()) - 1 / np.sqrt(3)) < 0.01
  normal = sampling.sample_latents(rng, 4096, 100, 'normal')
  assert float(normal.max()) > 3.0 and abs(float(normal.std()) - 1) < 0.01
  with pytest.raises(ValueError, match='uniform'):
    sampling.sample_latents(rng, 2, 2, 'cauchy')
