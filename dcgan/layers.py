"""Convolution layers with a backend-chosen implementation.

`Conv` and `ConvTranspose` hold the same parameters as `flax.linen.Conv` and
`flax.linen.ConvTranspose` (a `kernel` of shape (kh, kw, in, out) and a `bias`)
and compute the same function as `lax.conv_general_dilated` /
`lax.conv_transpose` with the same padding.

`impl` selects how: 'xla' calls the XLA convolution, 'matmul' rewrites the
convolution as matrix products (fast on XLA:CPU), 'auto' picks 'matmul' on CPU
and 'xla' elsewhere.
"""
# NOTE: placeholder; the matmul path is being written.

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

IMPLS = ('auto', 'xla', 'matmul')


def resolve_impl(impl: str) -> str:
  """Returns 'xla' or 'matmul' for an `impl` in IMPLS."""
  if impl not in IMPLS:
    raise ValueError(f'conv impl must be one of {IMPLS}, got {impl!r}')
  if impl == 'auto':
    return 'matmul' if jax.default_backend() == 'cpu' else 'xla'
  return impl


class Conv(nn.Module):
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Any = 'SAME'
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  dtype: Any = None
  param_dtype: Any = jnp.float32
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    dtype = self.dtype or x.dtype
    y = jax.lax.conv_general_dilated(
        x.astype(dtype), kernel.astype(dtype), tuple(self.strides),
        self.padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,),
                         self.param_dtype).astype(dtype)
    return y


class ConvTranspose(nn.Module):
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Any = 'SAME'
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  dtype: Any = None
  param_dtype: Any = jnp.float32
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    dtype = self.dtype or x.dtype
    y = jax.lax.conv_transpose(
        x.astype(dtype), kernel.astype(dtype), tuple(self.strides),
        self.padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,),
                         self.param_dtype).astype(dtype)
    return y
