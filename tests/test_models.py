"""Shapes and BatchNorm behaviour of the generator and discriminator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from dcgan import models
from experiments.configs import avatar, dcgan64


# Init and apply run jitted: run op by op, each of the layers' many small
# ops compiles on its own (179 compilations for one small generator's init),
# and this file took 141 s instead of 48.


def _init(module, x, seed=0):
  return jax.jit(lambda key, x: module.init(key, x, train=False))(
      jax.random.key(seed), x)


def _apply(module, variables, x, **kwargs):
  return jax.jit(lambda v, x: module.apply(v, x, **kwargs))(variables, x)


def _build_and_run(image_size, latents):
  """(G(latents), D(G(latents))) of small models for image_size, fresh init."""
  config = avatar.get_config()
  config.model.g_base_features = config.model.d_base_features = 4
  generator, discriminator = models.create_models(config.model, image_size)

  def run(latents):
    fake = generator.apply(generator.init(jax.random.key(0), latents,
                                          train=False), latents, train=False)
    d_vars = discriminator.init(jax.random.key(1), fake, train=False)
    return fake, discriminator.apply(d_vars, fake, train=False)

  if isinstance(latents, jax.ShapeDtypeStruct):
    return jax.eval_shape(run, latents)
  return jax.jit(run)(latents)


@pytest.mark.parametrize('image_size', [32, 48, 64, 80, 96, 112, 128])
def test_every_image_size_builds_with_right_shapes(image_size):
  # Traced at every size (every layer's shapes and tap groups are worked out
  # while tracing); 80, a 5x5 start, is also compiled and run.
  latents = jax.ShapeDtypeStruct((3, 100), jnp.float32)
  if image_size == 80:
    latents = jax.random.uniform(jax.random.key(0), (3, 100), minval=-1,
                                 maxval=1)
  fake, logits = _build_and_run(image_size, latents)
  assert fake.shape == (3, image_size, image_size, 3)
  assert fake.dtype == jnp.float32
  assert logits.shape == (3,)
  assert logits.dtype == jnp.float32
  if image_size == 80:
    assert np.all(np.abs(fake) <= 1) and np.all(np.isfinite(logits))


@pytest.mark.parametrize('get_config', [avatar.get_config,
                                        dcgan64.get_config])
def test_presets_have_the_documented_layers(get_config):
  config = get_config()
  generator, discriminator = models.create_models(config.model,
                                                  config.image_size)
  latents = jnp.zeros((1, config.latent_dim))
  g_params = jax.eval_shape(lambda: _init(generator, latents))['params']
  s = config.image_size // 16
  k = config.model.kernel_size
  assert g_params['project']['kernel'].shape == (100, s * s * 512)
  assert [g_params[f'deconv{i}']['kernel'].shape for i in range(1, 5)] == [
      (k, k, 512, 256), (k, k, 256, 128), (k, k, 128, 64), (k, k, 64, 3)]
  # The tutorial leaves the last hidden G layer without BN; the paper doesn't.
  assert ('bn3' in g_params) == config.model.g_last_hidden_bn
  images = jnp.zeros((1, config.image_size, config.image_size, 3))
  d_params = jax.eval_shape(lambda: _init(discriminator, images))['params']
  assert [d_params[f'conv{i}']['kernel'].shape for i in range(4)] == [
      (k, k, 3, 64), (k, k, 64, 128), (k, k, 128, 256), (k, k, 256, 512)]
  assert sorted(n for n in d_params if n.startswith('bn')) == [
      'bn1', 'bn2', 'bn3']
  assert d_params['logit']['kernel'].shape == (s * s * 512, 1)


def test_weights_start_from_normal_0_02(tiny_config):
  generator, _ = models.create_models(avatar.get_config().model, 48)
  params = _init(generator, jnp.zeros((1, 100)))['params']
  kernel = np.asarray(params['deconv1']['kernel']).ravel()
  assert abs(kernel.mean()) < 1e-3
  assert kernel.std() == pytest.approx(0.02, rel=0.02)
  assert not np.any(params['deconv1']['bias'])


def test_generator_output_in_range_and_logits_per_image(tiny_config):
  generator, discriminator = models.create_models(tiny_config.model, 32)
  latents = 50.0 * jax.random.normal(jax.random.key(1), (5, 16))
  g_vars = _init(generator, latents)
  fake, _ = _apply(generator, g_vars, latents, train=True,
                   mutable=['batch_stats'])
  assert fake.shape == (5, 32, 32, 3)
  assert float(fake.min()) >= -1.0 and float(fake.max()) <= 1.0
  logits, _ = _apply(discriminator, _init(discriminator, fake), fake,
                     train=True, mutable=['batch_stats'])
  assert logits.shape == (5,)


def test_train_mode_updates_batch_stats_eval_mode_does_not(tiny_config):
  generator, _ = models.create_models(tiny_config.model, 32)
  latents = jax.random.uniform(jax.random.key(2), (8, 16), minval=-1,
                               maxval=1)
  g_vars = _init(generator, latents)
  _, updates = _apply(generator, g_vars, latents, train=True,
                      mutable=['batch_stats'])
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         g_vars['batch_stats'], updates['batch_stats'])
  assert all(jax.tree.leaves(changed))
  _, updates = _apply(generator, g_vars, latents, train=False,
                      mutable=['batch_stats'])
  same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                      g_vars['batch_stats'], updates['batch_stats'])
  assert all(jax.tree.leaves(same))


def test_two_running_average_updates_equal_two_forward_passes(tiny_config):
  generator, _ = models.create_models(tiny_config.model, 32)
  latents = jax.random.uniform(jax.random.key(4), (8, 16), minval=-1,
                               maxval=1)
  g_vars = _init(generator, latents)
  apply = jax.jit(lambda v, n: generator.apply(
      v, latents, train=True, running_average_updates=n,
      mutable=['batch_stats']), static_argnums=1)
  once, first = apply(g_vars, 1)
  _, second = apply({'params': g_vars['params'], **first}, 1)
  twice, both = apply(g_vars, 2)
  np.testing.assert_array_equal(twice, once)
  for a, b, c in zip(jax.tree.leaves(both), jax.tree.leaves(second),
                     jax.tree.leaves(first)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert np.all(a != c)  # two updates are not one


def test_eval_mode_output_does_not_depend_on_batch(tiny_config):
  generator, _ = models.create_models(tiny_config.model, 32)
  latents = jax.random.uniform(jax.random.key(3), (8, 16), minval=-1,
                               maxval=1)
  g_vars = _init(generator, latents)
  # Move the running averages away from their initial values first.
  _, updates = _apply(generator, g_vars, latents, train=True,
                      mutable=['batch_stats'])
  g_vars = {'params': g_vars['params'], **updates}
  apply = jax.jit(lambda z: generator.apply(g_vars, z, train=False))
  full = apply(latents)
  np.testing.assert_allclose(apply(latents[:3]), full[:3], atol=1e-6)
  np.testing.assert_allclose(apply(latents[5:6]), full[5:6], atol=1e-6)
  # In train mode the batch statistics couple the images of a batch.
  train_full, _ = _apply(generator, g_vars, latents, train=True,
                         mutable=['batch_stats'])
  train_part, _ = _apply(generator, g_vars, latents[:3], train=True,
                         mutable=['batch_stats'])
  assert not np.allclose(train_part, train_full[:3], atol=1e-4)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_leaky_relu_matches_flax_values_and_gradients(dtype):
  """Same outputs, first and second derivatives as nn.leaky_relu (0 included).

  The gradient is one multiply: no sum of per-branch selects (add_any).
  """
  x = jnp.asarray([-3.0, -0.5, -0.0, 0.0, 0.25, 2.0], dtype)
  ours = lambda x: models.leaky_relu(x, 0.2)
  flax = lambda x: nn.leaky_relu(x, negative_slope=0.2)
  np.testing.assert_array_equal(np.asarray(ours(x), np.float32),
                                np.asarray(flax(x), np.float32))
  weights = jnp.arange(1, 7, dtype=dtype)
  for f in (ours, flax):
    assert f(x).dtype == dtype
  grads = [jax.grad(lambda x: jnp.sum(f(x) * weights).astype(jnp.float32))(x)
           for f in (ours, flax)]
  np.testing.assert_array_equal(np.asarray(grads[0], np.float32),
                                np.asarray(grads[1], np.float32))
  # d/dx of the input gradient's norm (as an R1 penalty takes it).
  second = [jax.grad(lambda x: jnp.sum(jax.grad(
      lambda x: jnp.sum(f(x) ** 2).astype(jnp.float32))(x) ** 2).astype(
          jnp.float32))(x) for f in (ours, flax)]
  np.testing.assert_allclose(np.asarray(second[0], np.float32),
                             np.asarray(second[1], np.float32), rtol=1e-2)
  jaxpr = str(jax.make_jaxpr(jax.grad(
      lambda x: jnp.sum(ours(x)).astype(jnp.float32)))(x))
  assert 'add_any' not in jaxpr
  assert 'add_any' in str(jax.make_jaxpr(jax.grad(
      lambda x: jnp.sum(flax(x)).astype(jnp.float32)))(x))
