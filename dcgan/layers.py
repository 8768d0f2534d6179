"""Convolution layers with a backend-chosen implementation.

`Conv` and `ConvTranspose` hold the same parameters as `flax.linen.Conv` and
`flax.linen.ConvTranspose` (a `kernel` of shape (kh, kw, in, out) and a `bias`)
and compute the same function as `lax.conv_general_dilated` /
`lax.conv_transpose` (NHWC / HWIO / NHWC, `transpose_kernel=False`) with the
same padding, so checkpoints are interchangeable between implementations.

`impl` selects how: 'xla' calls the XLA convolution, 'matmul' rewrites the
convolution as matrix products (fast on XLA:CPU, whose convolutions, and above
all its transposed-convolution weight gradients, run far below matmul speed),
'auto' picks 'matmul' on CPU and GPU and 'xla' elsewhere (TPU). On an H200 the
matmul path trained the reference recipe at 1.8x the XLA convolutions' rate
(batch 64, fp32; 1.5x at batch 256): benchmarks/gpu.sh.

How 'matmul' works
------------------
Everything is built from one strided correlation and its adjoint. Per spatial
axis, with stride s, kernel size K and low padding `lo`,

    corr:    y[o] = sum_k  xpad[o*s + k] @ w[k]          (xpad[p] = x[p - lo])
    adjoint: x[i] = sum_{o, k : o*s + k = i + lo}  y[o] @ w[k]^T

* corr is im2col + ONE matmul: a (B*Ho*Wo, K*K*Cin) patch matrix times the
  kernel reshaped to (K*K*Cin, Cout). The patches are K*K slices of the
  zero-padded input viewed as s*s phases (space-to-depth by reshape), so no
  slice is strided and XLA writes the whole matrix in one fused loop.
* the adjoint is col2im: ONE matmul y @ w^T of shape (B*Ho*Wo, K*K*Cin), then
  every tap's column block is added where it belongs, one spatial axis at a
  time (the width's taps, then the height's). Along an axis the adds are
  grouped by output phase (i + lo) mod s: a phase receives only the taps
  k = phase (mod s), each a plain shifted copy on the low-resolution grid (a
  pad, no scatter), and the s phases are interleaved (depth-to-space). No
  multiplication touches the zeros a dilated input would carry. Summing all
  K*K taps in one pass instead ran ~1.5x slower (XLA:CPU's loop over ~K*K/s^2
  padded terms an element, versus ~K/s twice); generating 500 samples got
  1.1-1.25x faster with the two passes. (A polyphase gather form, one matmul
  over a shared 3x3 window with zero-padded sub-kernels, spends 1.44x the MACs
  at 5x5 / stride 2 and was slower end to end.)
* the kernel gradient of either is patches^T @ y: ONE matmul whose
  contraction is M = B*Ho*Wo. It runs as y^T @ patches with y^T copied
  channel-major first: XLA:CPU hands a dot to its fast YNNPACK GEMM only when
  the lhs contracts over its last dimension, and otherwise upcasts bfloat16
  operands to float32 for a slower kernel. At M = 9216, K = 1600, N = 128
  (bfloat16, 2 shared cores) the (M, K)^T @ (M, N) form ran at 47 GFLOP/s,
  below its float32 rate, and the copied form at 168; it lifted the bfloat16
  training step of the reference recipe ~1.2x (30 -> 35-37 img/s, loaded
  machine) and left float32 as it was. (Polyphase forms of the adjoint, per
  phase or over a shared window, did not beat col2im in the bfloat16 step
  either: only the 128 -> 64 channel layers ran faster alone.)

* bfloat16 patch matrices and channel-major copies are built from the
  values' uint16 bit patterns: XLA:CPU computes bfloat16 data movement in
  float32, with converts both ways and float32 intermediates in memory. The
  bias gradient sums in float32 (`add_bias`). Both lifted the bfloat16
  training step ~1.06x. The layers take the kernel in its parameter dtype and
  cast it themselves, so a float32 kernel's gradient is the matmul's float32
  result, not one rounded to bfloat16 and cast back.

`Conv` is corr; its input gradient is the adjoint. A transposed convolution
(`lax.conv_transpose`, i.e. a stride-1 convolution of the s-dilated input with
low padding lo) is the adjoint of a correlation from its output back to its
input with the flipped, in/out-swapped kernel and low padding K - 1 - lo. So
`ConvTranspose` is the adjoint and its input gradient is corr; the flip is
folded into the tap order and the swap into the dot dimension numbers. Both
layers are `jax.custom_vjp`s whose backward passes are these explicit
matmuls: no direction contains a convolution, a scatter or a matmul over
zero-dilated arrays. Matmuls accumulate in float32 whatever the compute dtype.
"""

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from flax import linen as nn

IMPLS = ('auto', 'xla', 'matmul')
_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def resolve_impl(impl: str) -> str:
  """Returns 'xla' or 'matmul' for an `impl` in IMPLS."""
  if impl not in IMPLS:
    raise ValueError(f'conv impl must be one of {IMPLS}, got {impl!r}')
  if impl == 'auto':
    return 'matmul' if jax.default_backend() in ('cpu', 'gpu') else 'xla'
  return impl


# ----------------------------------------------------------------- padding --


def _pairs(padding, ndim: int = 2):
  """Explicit ((lo, hi), ...) from an int or a sequence of pairs."""
  if isinstance(padding, int):
    return ((padding, padding),) * ndim
  pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pairs) != ndim:
    raise ValueError(f'padding needs {ndim} (lo, hi) pairs, got {padding!r}')
  return pairs


def _conv_transpose_pads(k: int, s: int, padding: str) -> tuple[int, int]:
  """Pads of the dilated convolution `lax.conv_transpose` runs for a string.

  Mirrors jax's private `_conv_transpose_padding` (checked against
  `lax.conv_transpose` by the tests).
  """
  _check_string(padding)
  if padding == 'SAME':
    pad_len = k + s - 2
    lo = k - 1 if s > k - 1 else -(-pad_len // 2)
  else:  # 'VALID'
    pad_len = k + s - 2 + max(k - s, 0)
    lo = k - 1
  return lo, pad_len - lo


def _check_string(padding):
  """Only 'SAME' and 'VALID' among strings ('CIRCULAR' is not supported)."""
  if isinstance(padding, str) and padding not in ('SAME', 'VALID'):
    raise ValueError("padding must be 'SAME', 'VALID', an int or (lo, hi) "
                     f'pairs, got {padding!r}')


# --------------------------------------------------- matmul-path geometry --


class _Geom(NamedTuple):
  """Static shape of one correlation: input/output sizes, kernel, stride, lo."""
  in_hw: tuple[int, int]
  out_hw: tuple[int, int]
  k_hw: tuple[int, int]
  strides: tuple[int, int]
  lo: tuple[int, int]


def _pad(x, pads):
  """Zero-pads (negative: crops) the two spatial axes of an NHWC array."""
  config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
  return lax.pad(x, jnp.zeros((), x.dtype), config)


def _dot(a, b, contract_a, contract_b):
  """lax.dot_general without batch dims, accumulated (and returned) in f32."""
  return lax.dot_general(a, b, ((contract_a, contract_b), ((), ())),
                         preferred_element_type=jnp.float32)


def _as_bits(move):
  """Runs the data movement `move` on 16-bit floats' bit patterns.

  XLA:CPU computes bfloat16 (and float16) elementwise ops in float32: a pad,
  slice or stack of bfloat16 becomes convert to float32, move, convert back,
  with float32 intermediates in memory. The same movement of uint16 bit
  patterns is exact (zero is all-zero bits) and moves half the bytes.
  """
  @functools.wraps(move)
  def wrapped(x, *args, **kwargs):
    if not (jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize == 2):
      return move(x, *args, **kwargs)
    bits = move(lax.bitcast_convert_type(x, jnp.uint16), *args, **kwargs)
    return lax.bitcast_convert_type(bits, x.dtype)
  return wrapped


@_as_bits
def _patches(x, g: _Geom, reverse: bool = False):
  """im2col: (B*Ho*Wo, kh*kw*C) rows of the padded input, tap-major columns.

  With `reverse`, column block (i, j) holds tap (kh-1-i, kw-1-j).
  """
  b, h, w, c = x.shape
  (kh, kw), (sh, sw), (oh, ow) = g.k_hw, g.strides, g.out_hw
  # Pad (or crop) to the span the windows read, rounded up to a multiple of
  # the stride, and view it as phases: xp[b, m*s + p] = phased[b, m, p].
  # Tap i = a*s + p then reads the contiguous rows a..a+Ho-1 of phase p, so
  # no slice is strided.
  mh, mw = -(-((oh - 1) * sh + kh) // sh), -(-((ow - 1) * sw + kw) // sw)
  xp = _pad(x, [(lo, m * s - lo - n)
                for lo, m, s, n in zip(g.lo, (mh, mw), (sh, sw), (h, w))])
  phased = xp.reshape(b, mh, sh, mw, sw, c)

  def tap(i, j):
    if reverse:
      i, j = kh - 1 - i, kw - 1 - j
    (a, p), (q, r) = divmod(i, sh), divmod(j, sw)
    return phased[:, a:a + oh, p, q:q + ow, r, :]

  # Two nested stacks of few operands each: XLA:CPU fuses them into a single
  # loop that writes the patch matrix once (a flat concatenate of kh*kw
  # operands is not fused and costs an extra pass over memory).
  rows = [jnp.stack([tap(i, j) for j in range(kw)], axis=3)
          for i in range(kh)]
  return jnp.stack(rows, axis=3).reshape(b * oh * ow, kh * kw * c)


def _col2im(cols, g: _Geom, reverse: bool = False):
  """Adds cols (B, Ho, Wo, kh, kw, C) onto (B, H, W, C) at o*s + k - lo.

  With `reverse`, tap k is read from cols[..., kh-1-k_h, kw-1-k_w, :].
  """
  _, oh, ow, kh, kw, _ = cols.shape
  (sh, sw), (h, w) = g.strides, g.in_hw
  if reverse:
    cols = cols[:, :, :, ::-1, ::-1, :]
  # Low-resolution rows per phase so that phase r, row m is padded position
  # m*s + r; enough rows for every window and for the whole input.
  mh = -(-max(g.lo[0] + h, (oh - 1) * sh + kh) // sh)
  mw = -(-max(g.lo[1] + w, (ow - 1) * sw + kw) // sw)

  def overlap_add(x, axis, tap_axis, s, m):
    """Sums the taps (along `tap_axis`) of x at o*s + k along `axis`.

    Tap k = r + s*j lands on phase r at low-resolution offset j: a shifted
    copy, no scatter. The s phases are then interleaved (depth-to-space), so
    `axis` grows from its n outputs to m*s positions.
    """
    n = x.shape[axis]
    phases = []
    for r in range(s):
      shifted = []
      for k in range(r, x.shape[tap_axis], s):
        pads = [(0, 0, 0)] * (x.ndim - 1)
        pads[axis] = (k // s, m - n - k // s, 0)
        shifted.append(lax.pad(lax.index_in_dim(x, k, tap_axis, False),
                               jnp.zeros((), x.dtype), pads))
      if not shifted:  # no tap on this phase (kernel smaller than stride)
        shape = list(x.shape)
        shape[axis] = m
        del shape[tap_axis]
        shifted.append(jnp.zeros(shape, x.dtype))
      phases.append(functools.reduce(jnp.add, shifted))
    stacked = jnp.stack(phases, axis=axis + 1)
    return stacked.reshape(*stacked.shape[:axis], m * s,
                           *stacked.shape[axis + 2:])

  # The kw taps along the width first, giving (B, Ho, mw*sw, kh, C), then
  # the kh taps along the height (why two passes: the module docstring).
  rows = overlap_add(cols, 2, 4, sw, mw)
  full = overlap_add(rows, 1, 3, sh, mh)
  return _pad(full, [(-lo, lo + n - m * s) for lo, n, m, s in
                     zip(g.lo, (h, w), (mh, mw), (sh, sw))])


# ------------------------------------------------------------------ Conv --
# y = corr(x, w) with the kernel (kh, kw, Cin, Cout) used as it is.


def _conv_forward(x, w, g: _Geom):
  w = w.astype(x.dtype)
  y = _dot(_patches(x, g), w.reshape(-1, w.shape[-1]), (1,), (0,))
  return y.reshape(x.shape[0], *g.out_hw, w.shape[-1]).astype(x.dtype)


def _conv_input_grad(dy, w, g: _Geom):
  kh, kw, cin, cout = w.shape
  w = w.astype(dy.dtype)
  cols = _dot(dy.reshape(-1, cout), w.reshape(-1, cout), (1,), (1,))
  cols = cols.reshape(*dy.shape[:3], kh, kw, cin)
  return _col2im(cols, g).astype(dy.dtype)


@_as_bits
def _transposed_rows(a):
  """(C, B*H*W) copy of an NHWC array: the kernel gradients' dot lhs.

  A kernel gradient contracts over the M = B*H*W rows of both its operands.
  XLA:CPU runs a dot as a fast YNNPACK GEMM only when the lhs contracts over
  its last dimension; otherwise it upcasts bfloat16 operands to float32 and
  calls a slower kernel. So the smaller operand is copied channel-major
  first. A 4-D transpose then a reshape stays a real copy (a 2-D `.T` would
  be folded back into the dot's dimension numbers, and so would a transpose
  of the dot's result, which is why the results are re-laid out by
  reshape + transpose).
  """
  return a.transpose(3, 0, 1, 2).reshape(a.shape[-1], -1)


def _conv_kernel_grad(x, dy, w, g: _Geom):
  kh, kw, cin, cout = w.shape
  dw = _dot(_transposed_rows(dy), _patches(x, g), (1,), (0,))
  return dw.reshape(cout, kh, kw, cin).transpose(1, 2, 3, 0).astype(w.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_matmul(x, w, g: _Geom):
  return _conv_forward(x, w, g)


def _conv_matmul_fwd(x, w, g):
  return _conv_forward(x, w, g), (x, w)


def _conv_matmul_bwd(g, res, dy):
  x, w = res
  return _conv_input_grad(dy, w, g), _conv_kernel_grad(x, dy, w, g)


_conv_matmul.defvjp(_conv_matmul_fwd, _conv_matmul_bwd)


# --------------------------------------------------------- ConvTranspose --
# y = adjoint of corr(., w_c) with w_c[k] = w[K-1-k]^T. The flip is folded
# into the tap order (reverse=True) and the in/out swap into the dot
# dimension numbers, so the kernel is never re-laid out tap by tap.


def _conv_t_forward(x, w, g: _Geom):
  kh, kw, cin, cout = w.shape
  w3 = w.astype(x.dtype).reshape(kh * kw, cin, cout)
  cols = _dot(x.reshape(-1, cin), w3, (1,), (1,))  # (M, kh*kw, Cout)
  cols = cols.reshape(*x.shape[:3], kh, kw, cout)
  return _col2im(cols, g, reverse=True).astype(x.dtype)


def _conv_t_input_grad(dy, w, g: _Geom):
  kh, kw, cin, cout = w.shape
  patches = _patches(dy, g, reverse=True).reshape(-1, kh * kw, cout)
  w3 = w.astype(dy.dtype).reshape(kh * kw, cin, cout)
  dx = _dot(patches, w3, (1, 2), (0, 2))
  return dx.reshape(dy.shape[0], *g.out_hw, cin).astype(dy.dtype)


def _conv_t_kernel_grad(x, dy, w, g: _Geom):
  kh, kw, cin, cout = w.shape
  # (Cin, kh*kw*Cout) keeps Cout innermost, so the re-layout to
  # (kh, kw, Cin, Cout) moves whole Cout rows, not single floats.
  dw = _dot(_transposed_rows(x), _patches(dy, g, reverse=True), (1,), (0,))
  return dw.reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3).astype(w.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_t_matmul(x, w, g: _Geom):
  return _conv_t_forward(x, w, g)


def _conv_t_matmul_fwd(x, w, g):
  return _conv_t_forward(x, w, g), (x, w)


def _conv_t_matmul_bwd(g, res, dy):
  x, w = res
  return _conv_t_input_grad(dy, w, g), _conv_t_kernel_grad(x, dy, w, g)


_conv_t_matmul.defvjp(_conv_t_matmul_fwd, _conv_t_matmul_bwd)


# -------------------------------------------------------------- the bias --


@jax.custom_vjp
def add_bias(y, bias):
  """`y + bias.astype(y.dtype)`, whose bias gradient sums in float32.

  The plain add's gradient sums the cotangent over the batch and spatial axes
  in y's dtype. For bfloat16 XLA:CPU then writes a float32 copy of the whole
  cotangent and reduces it with a strided reduce-window, ~5-10 ms a layer at
  64x24x24x64; summed in float32 from the start, the convert fuses into one
  fast reduction (and the sum is not rounded to bfloat16 on the way).
  """
  return y + bias.astype(y.dtype)


def _add_bias_fwd(y, bias):
  return add_bias(y, bias), jnp.zeros((0,), bias.dtype)


def _add_bias_bwd(bias_like, dy):
  axes = tuple(range(dy.ndim - 1))
  return dy, jnp.sum(dy, axes, dtype=jnp.float32).astype(bias_like.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


# --------------------------------------------------------- the two layers --


def conv(x, kernel, strides, padding, impl: str):
  """`lax.conv_general_dilated(x, kernel, strides, padding)`, NHWC/HWIO.

  Computes in x's dtype; the kernel may be wider (float32 parameters of a
  bfloat16 model) and its gradient keeps the kernel's dtype.
  """
  _check_string(padding)
  k_hw = kernel.shape[:2]
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(x.shape[1:3], k_hw, strides, padding)
  else:
    pads = _pairs(padding)
  if resolve_impl(impl) == 'xla':
    return lax.conv_general_dilated(x, kernel.astype(x.dtype), strides, pads,
                                    dimension_numbers=_DIMENSION_NUMBERS)
  out_hw = tuple((n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in
                 zip(x.shape[1:3], pads, k_hw, strides))
  g = _Geom(tuple(x.shape[1:3]), out_hw, tuple(k_hw), tuple(strides),
            tuple(lo for lo, _ in pads))
  return _conv_matmul(x, kernel, g)


def conv_transpose(x, kernel, strides, padding, impl: str):
  """`lax.conv_transpose(x, kernel, strides, padding)`, NHWC/HWIO.

  Computes in x's dtype, as `conv` does.
  """
  _check_string(padding)
  k_hw = kernel.shape[:2]
  if isinstance(padding, str):
    pads = tuple(_conv_transpose_pads(k, s, padding)
                 for k, s in zip(k_hw, strides))
  else:
    pads = _pairs(padding)
  if resolve_impl(impl) == 'xla':
    return lax.conv_transpose(x, kernel.astype(x.dtype), strides, pads,
                              dimension_numbers=_DIMENSION_NUMBERS)
  # Output of the dilated convolution lax runs: (n-1)*s + 1 + lo + hi - k + 1.
  out_hw = tuple((n - 1) * s + lo + hi - k + 2 for n, (lo, hi), k, s in
                 zip(x.shape[1:3], pads, k_hw, strides))
  # It equals the adjoint of a correlation from the output back to x with the
  # flipped, in/out-swapped kernel and low padding k - 1 - lo.
  g = _Geom(out_hw, tuple(x.shape[1:3]), tuple(k_hw), tuple(strides),
            tuple(k - 1 - lo for k, (lo, _) in zip(k_hw, pads)))
  return _conv_t_matmul(x, kernel, g)


class _ConvBase(nn.Module):
  """Fields and parameters shared by Conv and ConvTranspose."""
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

  def _apply(self, op, x):
    # Bad settings fail before any parameter is made.
    resolve_impl(self.impl)
    _check_string(self.padding)
    kernel_size = self.kernel_size
    if isinstance(kernel_size, int):
      kernel_size = (kernel_size,) * 2
    strides = self.strides
    if isinstance(strides, int):
      strides = (strides,) * 2
    kernel = self.param('kernel', self.kernel_init,
                        (*kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    dtype = self.dtype or x.dtype
    # The kernel stays in param_dtype: `op` casts it to the compute dtype
    # itself, so the matmul path returns its float32 kernel gradient as it
    # is rather than rounded to the compute dtype and cast back.
    y = op(x.astype(dtype), kernel, tuple(strides), self.padding, self.impl)
    if self.use_bias:
      y = add_bias(y, self.param('bias', self.bias_init, (self.features,),
                                 self.param_dtype))
    return y


class Conv(_ConvBase):
  """`flax.linen.Conv` (2-D, NHWC), computed as `impl` says."""

  @nn.compact
  def __call__(self, x):
    return self._apply(conv, x)


class ConvTranspose(_ConvBase):
  """`flax.linen.ConvTranspose` (2-D, NHWC), computed as `impl` says."""

  @nn.compact
  def __call__(self, x):
    return self._apply(conv_transpose, x)
