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

* corr is im2col + ONE matmul (one per pair of tap groups, below): a (B*Ho*Wo,
  K*K*Cin) patch matrix times the kernel reshaped to (K*K*Cin, Cout). The
  patches are slices of the zero-padded input viewed as s*s phases
  (space-to-depth by reshape), one per tap except that the width taps of one
  stride share one, so no slice is strided and XLA writes the whole matrix in
  one fused loop.
* the adjoint is col2im: ONE matmul (idem) y @ w^T of shape (B*Ho*Wo,
  K*K*Cin), then every tap's column block is added where it belongs, one
  spatial axis at a time (the width's taps, then the height's). Along an axis
  the adds are grouped by output phase (i + lo) mod s: a phase receives only
  the taps k = phase (mod s), each a plain shifted copy on the low-resolution
  grid (a pad, no scatter), and the s phases are interleaved (depth-to-space).
  No multiplication touches the zeros a dilated input would carry. Summing all
  K*K taps in one pass instead ran ~1.5x slower (XLA:CPU's loop over ~K*K/s^2
  padded terms an element, versus ~K/s twice); generating 500 samples got
  1.1-1.25x faster with the two passes. (A polyphase gather form, one matmul
  over a shared 3x3 window with zero-padded sub-kernels, spends 1.44x the MACs
  at 5x5 / stride 2 and was slower end to end.)
* the kernel gradient of either is patches^T @ y: ONE matmul (idem) whose
  contraction is M = B*Ho*Wo. It runs as y^T @ patches with y^T copied
  channel-major first: XLA:CPU hands a dot to its fast YNNPACK GEMM only when
  the lhs contracts over its last dimension, and otherwise upcasts bfloat16
  operands to float32 for a slower kernel. At M = 9216, K = 1600, N = 128
  (bfloat16, 2 shared cores) the (M, K)^T @ (M, N) form ran at 47 GFLOP/s,
  below its float32 rate, and the copied form at 168; it lifted the bfloat16
  training step of the reference recipe ~1.2x (30 -> 35-37 img/s, loaded
  machine) and left float32 as it was. Only float32 products with a small
  result (the 3-channel layers') contract y as it lies (`_rows_t_dot`).
  (Polyphase forms of the adjoint, per phase or over a shared window, did
  not beat col2im in the bfloat16 step either: only the 128 -> 64 channel
  layers ran faster alone.)

* taps that read the zero padding are not multiplied where that is a large
  share of the work: at 48x48 the 3x3 layers' outputs read only 64% of their
  (output, tap) pairs inside the input, the 6x6 ones 81%. Along each axis the
  taps split into groups that the same outputs read inside (at 6 -> 3,
  stride 2: tap 0 by outputs 1-2, taps 1-2 by all, taps 3-4 by 0-1); each
  pair of groups is one matmul over just those outputs and taps. The forward
  parts are added in place into one array (`_correlate`), the kernel
  gradient's blocks tiled, and col2im takes every group's columns at its
  offset. Below SPLIT_BELOW (0.85) inside, and with at least
  SPLIT_MIN_MACS of work, a layer splits: training one core, fp32
  25.9/27.5 -> 29.2/29.6 img/s, bf16 48.7/46.3 -> 51.3/52.6; generating, 2
  cores, fp32 813/797/851 -> 925/928/933 samples/s, bf16 unchanged.
  Splitting the 12x12 layers too (90% inside), or along their height only,
  was slower, the 3x3 ones alone slower than both.
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
import itertools
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


class _TapGroup(NamedTuple):
  """Taps k0..k1-1 of one axis, all read inside by outputs o0..o1-1.

  Inside: from the input itself, not from its zero padding.
  """
  k0: int
  k1: int
  o0: int
  o1: int


def _tap_groups(n_in: int, n_out: int, k: int, s: int, lo: int):
  """One axis's taps, grouped by the range of outputs that read them inside.

  Tap t of output o reads input o*s + t - lo; consecutive taps whose in-range
  outputs coincide form a group. Taps no output reads inside are left out.
  """
  groups = []
  for t in range(k):
    o0 = max(0, -(-(lo - t) // s))
    o1 = min(n_out, (n_in - 1 + lo - t) // s + 1)
    if o1 <= o0:
      continue
    last = groups[-1] if groups else None
    if last and (last.o0, last.o1, last.k1) == (o0, o1, t):
      groups[-1] = last._replace(k1=t + 1)
    else:
      groups.append(_TapGroup(t, t + 1, o0, o1))
  return groups


def _inside_groups(g: _Geom):
  """`_tap_groups` of each spatial axis of g."""
  return [_tap_groups(*axis)
          for axis in zip(g.in_hw, g.out_hw, g.k_hw, g.strides, g.lo)]


def _valid_share(g: _Geom) -> float:
  """Share of (output, tap) pairs that read inside the input."""
  share = 1.0
  for groups, n_out, k in zip(_inside_groups(g), g.out_hw, g.k_hw):
    share *= sum((gr.k1 - gr.k0) * (gr.o1 - gr.o0) for gr in groups) / (
        n_out * k)
  return share


# A layer splits its taps into groups (`_tap_groups`) when fewer than this
# share of its (output, tap) pairs read inside the input and its matmuls
# would run at least SPLIT_MIN_MACS multiply-adds unsplit. Smaller layers
# gained nothing measurable (the test config's step, 8 images of 32x32),
# while their extra dots took the step's compilation from 9.0 to 12.9 s.
SPLIT_BELOW = 0.85
SPLIT_MIN_MACS = 2**24


def _groups(g: _Geom, batch: int, w):
  """The tap groups of each axis that a layer's matmuls run over."""
  macs = batch * g.out_hw[0] * g.out_hw[1] * w.size
  # (A share of 0, no tap ever read inside, leaves no groups: run it dense.)
  if 0 < _valid_share(g) < SPLIT_BELOW and macs >= SPLIT_MIN_MACS:
    return _inside_groups(g)
  return [[_TapGroup(0, k, 0, n)] for k, n in zip(g.k_hw, g.out_hw)]


def _kernel_span(gr: _TapGroup, k: int, reverse: bool) -> tuple[int, int]:
  """(start, stop) of group gr's taps in a kernel axis of size k.

  With `reverse`, correlation tap t is the kernel's tap k-1-t.
  """
  return (k - gr.k1, k - gr.k0) if reverse else (gr.k0, gr.k1)


def _kernel_taps(w, gh: _TapGroup, gw: _TapGroup, reverse: bool = False):
  """The kernel's slice for correlation taps gh x gw, in kernel order."""
  (h0, h1), (w0, w1) = (_kernel_span(gr, k, reverse)
                        for gr, k in zip((gh, gw), w.shape[:2]))
  return w[h0:h1, w0:w1]


@_as_bits
def _patches(x, g: _Geom, gh: _TapGroup, gw: _TapGroup,
             reverse: bool = False):
  """im2col: (B*Oh*Ow, Th*Tw*C) rows of the padded input, tap-major columns.

  The rows are the outputs gh.o0..gh.o1-1 x gw.o0..gw.o1-1, the column blocks
  the taps gh.k0..gh.k1-1 x gw.k0..gw.k1-1; with `reverse`, in reverse order.
  """
  b, h, w, c = x.shape
  (kh, kw), (sh, sw), (oh, ow) = g.k_hw, g.strides, g.out_hw
  # Pad (or crop) to the span the windows read, rounded up to a multiple of
  # the stride, and view it as phases: xp[b, m*s + p] = phased[b, m, p].
  # Tap i = a*s + p of outputs o0..o1-1 then reads the contiguous rows
  # a+o0..a+o1-1 of phase p, so no slice is strided.
  mh, mw = -(-((oh - 1) * sh + kh) // sh), -(-((ow - 1) * sw + kw) // sw)
  xp = _pad(x, [(lo, m * s - lo - n)
                for lo, m, s, n in zip(g.lo, (mh, mw), (sh, sw), (h, w))])
  phased = xp.reshape(b, mh, sh, mw, sw, c)

  taps_h, taps_w = range(gh.k0, gh.k1), range(gw.k0, gw.k1)
  if reverse:
    taps_h, taps_w = taps_h[::-1], taps_w[::-1]
  # Width taps j = q*s + r with the same q and consecutive phases r are
  # adjacent in memory (phased[..., q, r, :] is padded column q*s + r): one
  # slice over r moves them together (reversed for descending taps). Against
  # a slice per tap, the 64x24x24x64 input's patch matrix (5x5, stride 2)
  # took 0.92x the time in float32 and 0.72-0.78x in bfloat16 (2 cores,
  # interleaved runs); the other layers' were even.
  runs = [(q, [j % sw for j in taps])  # (q, its taps' phases r, in order)
          for q, taps in itertools.groupby(taps_w, lambda j: j // sw)]

  def row(i):
    a, p = divmod(i, sh)
    parts = []
    for q, rs in runs:
      part = phased[:, a + gh.o0:a + gh.o1, p, q + gw.o0:q + gw.o1,
                    min(rs):max(rs) + 1, :]
      parts.append(part[:, :, :, ::-1] if len(rs) > 1 and reverse else part)
    return jnp.concatenate(parts, axis=3)

  # A concatenate in a stack, each of few operands: XLA:CPU fuses them into
  # a single loop that writes the patch matrix once (a flat concatenate of
  # kh*kw operands is not fused and costs an extra pass over memory).
  rows = [row(i) for i in taps_h]
  return jnp.stack(rows, axis=3).reshape(
      b * (gh.o1 - gh.o0) * (gw.o1 - gw.o0), len(taps_h) * len(taps_w) * c)


def _correlate(x, part_of, g: _Geom, groups):
  """y[o] = sum_k xpad[o*s + k] @ w[k], one matmul per pair of tap groups.

  `part_of(gh, gw)` returns the (B*Oh'*Ow', C) float32 sum over the taps
  gh x gw of the outputs they read inside. The largest part, padded to the
  whole output grid, starts the sum; every other part is added in place
  into its block of outputs (dynamic_slice + dynamic_update_slice), and the
  sum is cast to x's dtype.

  Written as padded parts added together, the sum was one elementwise
  expression that XLA fused into each of its consumers (BatchNorm's two
  reductions and its normalisation, the next layer's patches, in the
  backward pass the slices of the kernel gradients), each reading all nine
  parts of a split layer again. The in-place adds are written once, and
  the consumers read one array: fp32 training step 1.032x and 1.041x
  (paired worker processes, medians of 10 and 16 rounds), bf16 0.998x.
  (The transposed convolutions' col2im height pass written the same way,
  as in-place adds of its taps, lost more than this gained: both together
  0.971x of the code before either.)
  """
  groups_h, groups_w = groups
  parts = []
  for gh in groups_h:
    for gw in groups_w:
      part = part_of(gh, gw)
      parts.append((gh.o0, gw.o0, part.reshape(
          x.shape[0], gh.o1 - gh.o0, gw.o1 - gw.o0, -1)))
  parts.sort(key=lambda p: -p[2].size)
  h0, w0, first = parts[0]
  total = _pad(first, [(h0, g.out_hw[0] - h0 - first.shape[1]),
                       (w0, g.out_hw[1] - w0 - first.shape[2])])
  for h0, w0, part in parts[1:]:
    start = (0, h0, w0, 0)
    block = lax.dynamic_slice(total, start, part.shape)
    total = lax.dynamic_update_slice(total, block + part, start)
  return total.astype(x.dtype)


def _tile(block_of, g: _Geom, groups, w, reverse: bool):
  """The gradient of kernel w from one block per pair of tap groups.

  `block_of(gh, gw)` returns the gradient of the taps gh x gw, (Th, Tw, Cin,
  Cout), in kernel order: with `reverse` the kernel's tap K-1-k is the
  correlation's tap k. Taps no output reads inside get zeros.
  """
  def segments(groups, k):
    spans = sorted((_kernel_span(gr, k, reverse), i)
                   for i, gr in enumerate(groups))
    out, at = [], 0
    for (start, stop), i in spans:
      if start > at:
        out.append((start - at, None))
      out.append((stop - start, i))
      at = stop
    if at < k:
      out.append((k - at, None))
    return out

  groups_h, groups_w = groups
  rows = []
  for th, i in segments(groups_h, g.k_hw[0]):
    row = []
    for tw, j in segments(groups_w, g.k_hw[1]):
      if i is None or j is None:
        row.append(jnp.zeros((th, tw, *w.shape[2:]), w.dtype))
      else:
        row.append(block_of(groups_h[i], groups_w[j]).astype(w.dtype))
    rows.append(jnp.concatenate(row, axis=1))
  return jnp.concatenate(rows, axis=0)


def _overlap_add(pieces, axis, tap_axis, s, m):
  """Sums pieces' taps at o*s + k along `axis`, giving m*s positions.

  Each piece is (x, o0, k0): x's entries along `axis` are outputs o0, o0+1,
  ... and along `tap_axis` taps k0, k0+1, .... Tap k of output o lands on
  phase k mod s at low-resolution offset o + k // s: a shifted copy, no
  scatter. The s phases are then interleaved (depth-to-space).
  """
  x0 = pieces[0][0]
  shape = list(x0.shape)
  shape[axis] = m
  del shape[tap_axis]
  phases = [[] for _ in range(s)]
  for x, o0, k0 in pieces:
    n = x.shape[axis]
    for t in range(x.shape[tap_axis]):
      k = k0 + t
      pads = [(0, 0, 0)] * (x.ndim - 1)
      pads[axis] = (o0 + k // s, m - n - o0 - k // s, 0)
      phases[k % s].append(lax.pad(lax.index_in_dim(x, t, tap_axis, False),
                                   jnp.zeros((), x.dtype), pads))
  # A phase no tap lands on (kernel smaller than the stride) stays zero.
  summed = [functools.reduce(jnp.add, p) if p else jnp.zeros(shape, x0.dtype)
            for p in phases]
  stacked = jnp.stack(summed, axis=axis + 1)
  return stacked.reshape(*stacked.shape[:axis], m * s,
                         *stacked.shape[axis + 2:])


def _adjoint(y, cols_of, g: _Geom, groups):
  """x[i] = sum_{o, k : o*s + k = i + lo} cols[o, k]: col2im of the matmuls.

  `cols_of(y_block, gh, gw)` returns the float32 (B, Oh', Ow', Th, Tw, C)
  columns of the taps gh x gw for y_block, the outputs they read inside.
  The result is cast to y's dtype.
  """
  (sh, sw), (h, w) = g.strides, g.in_hw
  (oh, ow), (kh, kw) = g.out_hw, g.k_hw
  # Low-resolution rows per phase so that phase r, row m is padded position
  # m*s + r; enough rows for every window and for the whole input.
  mh = -(-max(g.lo[0] + h, (oh - 1) * sh + kh) // sh)
  mw = -(-max(g.lo[1] + w, (ow - 1) * sw + kw) // sw)
  groups_h, groups_w = groups
  row_pieces = []
  for gh in groups_h:
    pieces = []
    for gw in groups_w:
      block = y[:, gh.o0:gh.o1, gw.o0:gw.o1]
      cols = cols_of(block, gh, gw)
      pieces.append((cols, gw.o0, gw.k0))
    # The width's taps first, giving (B, Oh', mw*sw, Th, C), then the
    # height's (why two passes: the module docstring).
    row_pieces.append((_overlap_add(pieces, 2, 4, sw, mw), gh.o0, gh.k0))
  full = _overlap_add(row_pieces, 1, 3, sh, mh)
  return _pad(full, [(-lo, lo + n - m * s) for lo, n, m, s in
                     zip(g.lo, (h, w), (mh, mw), (sh, sw))]).astype(y.dtype)


def _hoistable(w):
  """`w` itself, marked so that XLA hoists its making out of a loop.

  `sampling.generate` runs G over chunks of latents in a `lax.map`. XLA's
  loop-invariant code motion moves computations out of the loop body, but
  not pure data movement (slice, transpose, reshape); layout assignment
  later turns a kernel's re-layout for its matmul into a copy inside the
  body, run for every chunk: 8 copies of up to 2 MB per chunk in the
  3x3 -> 6x6 layer alone, 6.5% of generating 500 float32 samples at 48x48
  (profiled, 2 cores). An identity `reduce_precision` (the dtype's own
  widths) is an op the pass does hoist, with the movement that feeds it,
  when the kernel is laid out for the matmul explicitly before it.
  Generating went 1.06-1.08x faster in float32 (paired runs, median of
  10-12 rounds); bfloat16 kernels were hoisted already (their cast is such
  an op). The training step keeps the plain form (`_conv_t_forward`).
  """
  finfo = jnp.finfo(w.dtype)
  return lax.reduce_precision(w, finfo.nexp, finfo.nmant)


# ------------------------------------------------------------------ Conv --
# y = corr(x, w) with the kernel (kh, kw, Cin, Cout) used as it is.


def _conv_forward(x, w, g: _Geom):
  def part_of(gh, gw):
    wt = _kernel_taps(w, gh, gw).astype(x.dtype)
    return _dot(_patches(x, g, gh, gw), wt.reshape(-1, w.shape[-1]),
                (1,), (0,))

  return _correlate(x, part_of, g, _groups(g, x.shape[0], w))


def _conv_input_grad(dy, w, g: _Geom):
  cin, cout = w.shape[2:]

  def cols_of(block, gh, gw):
    wt = _kernel_taps(w, gh, gw).astype(dy.dtype)
    cols = _dot(block.reshape(-1, cout), wt.reshape(-1, cout), (1,), (1,))
    return cols.reshape(*block.shape[:3], *wt.shape[:2], cin)

  return _adjoint(dy, cols_of, g, _groups(g, dy.shape[0], w))


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


# A float32 kernel gradient with fewer outputs than this contracts the
# activations as they are, without the channel-major copy (`_rows_t_dot`).
SMALL_KERNEL_GRAD = 2**18


def _rows_t_dot(a, patches):
  """a^T @ patches: (C, K) float32 from an NHWC block and (B*H*W, K) patches.

  The contraction runs over the B*H*W rows of both. 16-bit operands, and
  float32 ones with a large (C, K) result, take the channel-major copy of
  `a` and YNNPACK's GEMM (`_transposed_rows`). A float32 product with a small
  result (the 3-channel layers: 64 x 75 outputs over 36,864 rows) is one
  that GEMM splits badly, a long contraction and too few output tiles for
  two threads: contracted over dimension 0 of both operands as they lie,
  XLA runs it in its own kernel instead, 4.7 ms against 8.0 for the copied
  form's product alone, copy not counted (2 cores, Intel Xeon with AMX,
  jax 0.10.2), and the 48x48 <-> 24x24 layers' forward + backward alone took
  13 ms instead of 20 (D conv0) and 10 instead of 16-18 (G deconv4). At
  128 x 1600 outputs (D conv1, G deconv3) the products alone are even
  (17.5 ms copied, its copy included, against 19.1), but in the training
  step the copy is the slow part: XLA fuses what makes `a` (BatchNorm and
  the activation, recomputed) into the transposing copy, whose loop then
  reads strided, 4-8 ms a copy in a profile of the step against 0.6 ms for a
  plain transpose of 64x12x12x128. So those layers, too, contract `a` as it
  lies: the fp32 step ran 1.018x and 1.013x faster (paired runs, medians
  of 10 and 16 rounds; all fp32 kernel gradients so, 1.010x). At 256 x
  3200 the copied form is faster (22.7 vs 27.3 ms); in bfloat16 it is
  3.5-4.4x faster at every size measured (64 x 75 to 512 x 6400 outputs).
  """
  c, k = a.shape[-1], patches.shape[-1]
  if a.dtype.itemsize == 4 and c * k < SMALL_KERNEL_GRAD:
    return _dot(a.reshape(-1, c), patches, (0,), (0,))
  return _dot(_transposed_rows(a), patches, (1,), (0,))


def _conv_kernel_grad(x, dy, w, g: _Geom):
  cin, cout = w.shape[2:]

  def block_of(gh, gw):
    dw = _rows_t_dot(dy[:, gh.o0:gh.o1, gw.o0:gw.o1], _patches(x, g, gh, gw))
    return dw.reshape(cout, gh.k1 - gh.k0, gw.k1 - gw.k0, cin).transpose(
        1, 2, 3, 0)

  return _tile(block_of, g, _groups(g, x.shape[0], w), w, reverse=False)


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
# dimension numbers, so the kernel is never re-laid out tap by tap. (The
# undifferentiated forward lays each tap group's kernel slice out as (Cin,
# taps*Cout), the copy XLA would make for the matmul anyway, so that it can
# be hoisted out of a loop: `_hoistable`.)


def _conv_t_forward(x, w, g: _Geom, hoist: bool = False):
  """The transposed convolution; `hoist` lays the kernel out hoistably.

  Without `hoist` the kernel slices go to the matmul as (taps, Cin, Cout)
  and XLA copies them into the matmul's layout itself; with it they are
  laid out as (Cin, taps*Cout) explicitly and marked (`_hoistable`). The
  products are the same. Only the undifferentiated forward (`generate`'s
  loop) hoists: there is no loop in the training step to hoist out of, and
  paired runs of the step with the explicit form measured 0.939-0.994x of
  the plain one (four runs of 10-20 rounds; the plain code against itself
  0.980), which this machine did not resolve from noise. So the step
  compiles exactly as it did before the explicit form existed.
  """
  cin, cout = w.shape[2:]

  def cols_of(block, gh, gw):
    # The columns come out in kernel order: read them back in correlation
    # order.
    wt = _kernel_taps(w, gh, gw, reverse=True).astype(x.dtype)
    if hoist:
      w2 = _hoistable(wt.transpose(2, 0, 1, 3).reshape(cin, -1))
      cols = _dot(block.reshape(-1, cin), w2, (1,), (0,))  # (M, taps*Cout)
    else:
      w3 = wt.reshape(-1, cin, cout)
      cols = _dot(block.reshape(-1, cin), w3, (1,), (1,))  # (M, taps, Cout)
    cols = cols.reshape(*block.shape[:3], *wt.shape[:2], cout)
    return cols[:, :, :, ::-1, ::-1, :]

  return _adjoint(x, cols_of, g, _groups(g, x.shape[0], w))


def _conv_t_input_grad(dy, w, g: _Geom):
  cin, cout = w.shape[2:]

  def part_of(gh, gw):
    wt = _kernel_taps(w, gh, gw, reverse=True).astype(dy.dtype)
    w3 = wt.reshape(-1, cin, cout)
    patches = _patches(dy, g, gh, gw, reverse=True)
    return _dot(patches.reshape(-1, w3.shape[0], cout), w3, (1, 2), (0, 2))

  return _correlate(dy, part_of, g, _groups(g, dy.shape[0], w))


def _conv_t_kernel_grad(x, dy, w, g: _Geom):
  cin, cout = w.shape[2:]

  def block_of(gh, gw):
    # (Cin, Th*Tw*Cout) keeps Cout innermost, so the re-layout to
    # (Th, Tw, Cin, Cout) moves whole Cout rows, not single floats.
    dw = _rows_t_dot(x[:, gh.o0:gh.o1, gw.o0:gw.o1],
                     _patches(dy, g, gh, gw, reverse=True))
    return dw.reshape(cin, gh.k1 - gh.k0, gw.k1 - gw.k0, cout).transpose(
        1, 2, 0, 3)

  return _tile(block_of, g, _groups(g, x.shape[0], w), w, reverse=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_t_matmul(x, w, g: _Geom):
  return _conv_t_forward(x, w, g, hoist=True)


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


def _conv_geom(in_hw, k_hw, strides, pads) -> _Geom:
  """The correlation a convolution with explicit (lo, hi) pads runs."""
  out_hw = tuple((n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in
                 zip(in_hw, pads, k_hw, strides))
  return _Geom(tuple(in_hw), out_hw, tuple(k_hw), tuple(strides),
               tuple(lo for lo, _ in pads))


def _conv_t_geom(in_hw, k_hw, strides, pads) -> _Geom:
  """The correlation whose adjoint a transposed convolution runs.

  `lax.conv_transpose` with (lo, hi) pads is a stride-1 convolution of the
  s-dilated input, of output (n-1)*s + 1 + lo + hi - k + 1. It equals the
  adjoint of a correlation from that output back to the input with the
  flipped, in/out-swapped kernel and low padding k - 1 - lo.
  """
  out_hw = tuple((n - 1) * s + lo + hi - k + 2 for n, (lo, hi), k, s in
                 zip(in_hw, pads, k_hw, strides))
  return _Geom(out_hw, tuple(in_hw), tuple(k_hw), tuple(strides),
               tuple(k - 1 - lo for k, (lo, _) in zip(k_hw, pads)))


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
  return _conv_matmul(x, kernel, _conv_geom(x.shape[1:3], k_hw, strides, pads))


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
  return _conv_t_matmul(x, kernel,
                        _conv_t_geom(x.shape[1:3], k_hw, strides, pads))


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
