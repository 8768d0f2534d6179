"""DCGAN generator and discriminator (flax linen, NHWC).

Two architectures, chosen by `config.model` (kernel_size, g_last_hidden_bn), both
for any image size that is a multiple of 16 from 32 to 128:

* the tutorial's (experiments/configs/avatar.py), 48x48 by default: G projects
  z to (s/16, s/16, 8*gf), then four stride-2 5x5 transposed convolutions
  double the size; BatchNorm+ReLU after all hidden layers except the last one,
  which has ReLU only. D is four stride-2 5x5 convolutions of 64/128/256/512
  features with LeakyReLU(0.2), BatchNorm on all but the first, and a dense
  layer to one logit.
* the DCGAN paper's (experiments/configs/dcgan64.py), 64x64: 4x4 kernels and
  BatchNorm on every hidden layer of G.

All weights start from N(0, 0.02) and biases from zero; BatchNorm uses momentum
0.9 and epsilon 1e-5. `train=True` normalises with the batch statistics and
updates the running averages in the 'batch_stats' collection (apply with
`mutable=['batch_stats']`); `train=False` uses the running averages.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from dcgan import layers

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 128
NUM_UPSAMPLINGS = 4  # so the projection is (image_size // 16) square

weight_init = nn.initializers.normal(stddev=0.02)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def leaky_relu(x, negative_slope: float = 0.2):
  """`nn.leaky_relu`, whose gradient is one multiply.

  Differentiating `where(x >= 0, x, slope * x)` gives one select per branch
  and their sum, a pass more over every activation of D on each backward
  pass; here the gradient is `dx = dy * where(x >= 0, 1, slope)`, the same
  values (the slope at 0 is 1 in both).
  """
  return jnp.where(x >= 0, x, negative_slope * x)


@leaky_relu.defjvp
def _leaky_relu_jvp(negative_slope, primals, tangents):
  (x,), (dx,) = primals, tangents
  slope = jnp.where(x >= 0, jnp.ones((), x.dtype),
                    jnp.asarray(negative_slope, x.dtype))
  return leaky_relu(x, negative_slope), dx * slope


def _batch_norm(train: bool, dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, name=name)


class Generator(nn.Module):
  """Maps latents (B, latent_dim) to images (B, H, W, 3) in [-1, 1]."""
  image_size: int = 48
  base_features: int = 64
  kernel_size: int = 5
  g_last_hidden_bn: bool = False
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latents: jnp.ndarray, train: bool = True,
               running_average_updates: int = 1) -> jnp.ndarray:
    """Images of `latents`.

    Args:
      latents: (B, latent_dim).
      train: normalise with the batch's statistics and move the running
        averages (True), or normalise with the running averages (False).
      running_average_updates: in train mode, how many times each BatchNorm
        folds this batch's statistics into its running averages: 2 when one
        forward pass stands for two identical ones (the training step's
        shared D/G pass), which leaves the averages exactly as two passes
        would.

    Returns:
      (B, image_size, image_size, 3) images in [-1, 1], float32.
    """
    def batch_norm(x, name):
      bn = _batch_norm(train, self.dtype, name)
      y = bn(x)
      if train:
        for _ in range(running_average_updates - 1):
          bn(x)  # the same statistics again; only the averages are kept
      return y

    s = self.image_size // 2**NUM_UPSAMPLINGS
    features = self.base_features * 2**(NUM_UPSAMPLINGS - 1)
    x = nn.Dense(s * s * features, kernel_init=weight_init, dtype=self.dtype,
                 name='project')(latents.astype(self.dtype))
    x = x.reshape(latents.shape[0], s, s, features)
    x = nn.relu(batch_norm(x, 'bn0'))
    for i in range(1, NUM_UPSAMPLINGS):
      features //= 2
      x = layers.ConvTranspose(
          features, (self.kernel_size,) * 2, (2, 2), padding='SAME',
          kernel_init=weight_init, dtype=self.dtype, impl=self.conv_impl,
          name=f'deconv{i}')(x)
      if i < NUM_UPSAMPLINGS - 1 or self.g_last_hidden_bn:
        x = batch_norm(x, f'bn{i}')
      x = nn.relu(x)
    x = layers.ConvTranspose(
        3, (self.kernel_size,) * 2, (2, 2), padding='SAME',
        kernel_init=weight_init, dtype=self.dtype, impl=self.conv_impl,
        name=f'deconv{NUM_UPSAMPLINGS}')(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """Maps images (B, H, W, 3) to logits (B,)."""
  base_features: int = 64
  kernel_size: int = 5
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    x = images.astype(self.dtype)
    for i in range(NUM_UPSAMPLINGS):
      x = layers.Conv(
          self.base_features * 2**i, (self.kernel_size,) * 2, (2, 2),
          padding='SAME', kernel_init=weight_init, dtype=self.dtype,
          impl=self.conv_impl, name=f'conv{i}')(x)
      if i > 0:
        x = _batch_norm(train, self.dtype, f'bn{i}')(x)
      x = leaky_relu(x, 0.2)
    x = x.reshape(x.shape[0], -1)
    logits = nn.Dense(1, kernel_init=weight_init, dtype=self.dtype,
                      name='logit')(x)
    return logits[:, 0].astype(jnp.float32)


def create_models(model_config, image_size: int) -> tuple[Generator,
                                                          Discriminator]:
  """Builds (generator, discriminator) from `config.model`."""
  dtype = jnp.dtype(model_config.dtype)
  generator = Generator(
      image_size=image_size, base_features=model_config.g_base_features,
      kernel_size=model_config.kernel_size,
      g_last_hidden_bn=model_config.g_last_hidden_bn,
      conv_impl=model_config.conv_impl, dtype=dtype)
  discriminator = Discriminator(
      base_features=model_config.d_base_features,
      kernel_size=model_config.kernel_size,
      conv_impl=model_config.conv_impl, dtype=dtype)
  return generator, discriminator
