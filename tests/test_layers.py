"""dcgan.layers: the 'matmul' path computes what the XLA convolution does."""

import jax
import jax.extend  # jaxprs_in_params, to walk nested jaxprs
import jax.numpy as jnp
import numpy as np
import pytest

from dcgan import layers
from dcgan import models

LAYERS = {'conv': layers.Conv, 'conv_transpose': layers.ConvTranspose}
# (stride, kernel) -> (spatial size, padding) cases. Every pair runs SAME and
# VALID; the sizes, 3*2^k and 2^k as in the project's networks, cover
# 3, 4, 6, 8, 12, 16, 24, 32, 48, 64 with odd and even outputs.
GRID = {
    (1, 3): ((3, 'SAME'), (16, 'VALID')),
    (1, 4): ((32, 'SAME'), (6, 'VALID')),
    (1, 5): ((12, 'SAME'), (64, 'VALID')),
    (2, 3): ((24, 'SAME'), (4, 'VALID')),
    (2, 4): ((8, 'SAME'), (12, 'VALID')),
    # Size 2: three of the five taps never read inside the input.
    (2, 5): ((3, 'SAME'), (48, 'SAME'), (6, 'VALID'), (2, 'SAME')),
    # A kernel narrower than the stride: some output phases get no tap.
    (3, 2): ((7, 'SAME'), (9, 'VALID')),
}


DEFAULT_SPLIT_MIN_MACS = layers.SPLIT_MIN_MACS


@pytest.fixture(autouse=True)
def _split_small_layers(monkeypatch):
  """Small test layers split their taps too, as the large ones do."""
  monkeypatch.setattr(layers, 'SPLIT_MIN_MACS', 0)


@pytest.fixture(autouse=True)
def _full_precision_matmuls():
  """Compares at full float32 precision.

  Off CPU, XLA's default float32 dot/conv precision may use TF32 or bfloat16
  passes, whose rounding would dwarf the 1e-5 tolerance.
  """
  with jax.default_matmul_precision('float32'):
    yield


def _grid():
  """(layer, stride, kernel, size, padding) for both layers."""
  return [(name, stride, kernel, size, padding)
          for (stride, kernel), cases in GRID.items()
          for size, padding in cases for name in LAYERS]


def _max_rel_err(actual, expected):
  actual = np.asarray(actual, np.float32)
  expected = np.asarray(expected, np.float32)
  assert actual.shape == expected.shape
  scale = max(float(np.max(np.abs(expected))), 1e-30)
  return float(np.max(np.abs(actual - expected))) / scale


def _compare(name, stride, kernel, size, padding, *, batch=2, features=(3, 4),
             dtype=None, tol=1e-5, shape=None):
  """Asserts matmul == xla for y and the gradients w.r.t. x, kernel, bias.

  y is checked both as the forward of the gradient computes it and as a
  plain, undifferentiated call does (the transposed convolution lays its
  kernel out differently there: `layers._hoistable`).
  """
  kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
  stride = stride if isinstance(stride, tuple) else (stride, stride)
  height, width = shape or (size, size)
  # numpy data: keeps jax.random's compilations out of this fast test.
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, height, width, features[0]), np.float32)
  params = {'params': {
      'kernel': rng.standard_normal((*kernel, *features), np.float32),
      'bias': rng.standard_normal(features[1:], np.float32)}}
  modules = [LAYERS[name](features[1], kernel, stride, padding, dtype=dtype,
                          impl=impl) for impl in ('xla', 'matmul')]
  y_shape = jax.eval_shape(modules[0].apply, params, x).shape
  cotangent = rng.standard_normal(y_shape, np.float32)

  @jax.jit
  def outputs_and_grads(params, x, cotangent):
    """Per impl: y, y undifferentiated, (d params, d x) of <y, cotangent>."""
    results = []
    for module in modules:
      y, vjp = jax.vjp(module.apply, params, x)
      results.append((y, module.apply(params, x),
                      vjp(cotangent.astype(y.dtype))))
    return results

  expected, actual = outputs_and_grads(params, x, cotangent)
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(expected)[0]]
  for path, a, e in zip(paths, jax.tree.leaves(actual),
                        jax.tree.leaves(expected)):
    assert a.dtype == e.dtype, path
    assert _max_rel_err(a, e) <= tol, (path, _max_rel_err(a, e))


@pytest.mark.parametrize('name,stride,kernel,size,padding', _grid())
def test_matmul_matches_xla(name, stride, kernel, size, padding):
  """Outputs and gradients w.r.t. input, kernel and bias, under jit."""
  _compare(name, stride, kernel, size, padding)


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('padding', [((1, 2), (0, 3)), ((3, 0), (2, 1)), 1])
def test_explicit_padding(name, padding):
  _compare(name, 2, 5, 7, padding)


def test_conv_that_reads_only_padding():
  """Stride 5 over 2 + 2 + 2 positions reads padding only: y is the bias."""
  g = layers._Geom((2, 2), (2, 2), (1, 1), (5, 5), (2, 2))
  assert layers._valid_share(g) == 0
  _compare('conv', 5, 1, 2, ((2, 2), (2, 2)))


@pytest.mark.parametrize('name', LAYERS)
def test_rectangular_input_kernel_and_strides(name):
  _compare(name, (2, 1), (5, 4), None, 'SAME', shape=(12, 9))


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('batch', [1, 3])
def test_any_batch_size(name, batch):
  _compare(name, 2, 5, 6, 'SAME', batch=batch, features=(16, 8))


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('kernel,size', [(5, 12), (4, 8)])
def test_bfloat16_compute(name, kernel, size):
  """bfloat16 compute (float32 params): equal up to bfloat16 rounding."""
  _compare(name, 2, kernel, size, 'SAME', features=(32, 16),
           dtype=jnp.bfloat16, tol=2e-2)


@pytest.mark.parametrize('name', LAYERS)
def test_second_order_gradients(name):
  """Reverse over reverse (e.g. an R1 gradient penalty) matches too."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 6, 6, 3), np.float32)
  params = {'params': {'kernel': rng.standard_normal((5, 5, 3, 4), np.float32),
                       'bias': np.zeros(4, np.float32)}}

  def penalty_grads(impl):
    module = LAYERS[name](4, (5, 5), (2, 2), impl=impl)

    def penalty(params, x):
      grad_x = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(params, x))))
      return jnp.sum(grad_x(x) ** 2)

    return jax.jit(jax.grad(penalty, argnums=(0, 1)))(params, x)

  for a, e in zip(jax.tree.leaves(penalty_grads('matmul')),
                  jax.tree.leaves(penalty_grads('xla'))):
    assert _max_rel_err(a, e) <= 1e-5


@pytest.mark.parametrize('name', LAYERS)
def test_params_identical_between_impls(name):
  x = jnp.ones((1, 6, 6, 3))
  trees = [jax.jit(LAYERS[name](4, (5, 5), (2, 2), impl=impl).init)(
      jax.random.key(0), x) for impl in ('xla', 'matmul', 'auto')]
  for tree in trees[1:]:
    assert jax.tree.structure(tree) == jax.tree.structure(trees[0])
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(trees[0])):
      assert a.shape == b.shape and a.dtype == b.dtype
      np.testing.assert_array_equal(a, b)
  assert set(trees[0]['params']) == {'kernel', 'bias'}
  assert trees[0]['params']['kernel'].shape == (5, 5, 3, 4)


def test_models_match_between_impls():
  """Generator and Discriminator share params and outputs across impls."""
  rng = np.random.default_rng(0)
  z = rng.standard_normal((2, 100), np.float32)
  images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  for make, inputs in (
      (lambda impl: models.Generator(32, base_features=8, conv_impl=impl), z),
      (lambda impl: models.Discriminator(8, conv_impl=impl), images)):
    shapes = [jax.eval_shape(make(impl).init, jax.random.key(0), inputs)
              for impl in ('xla', 'matmul')]
    assert shapes[0] == shapes[1]
    variables = jax.tree.map(
        lambda s: 0.05 * rng.standard_normal(s.shape, np.float32), shapes[0])
    outs = [jax.jit(lambda v, x, impl=impl: make(impl).apply(
        v, x, mutable=['batch_stats'])[0])(variables, inputs)
            for impl in ('xla', 'matmul')]
    assert _max_rel_err(outs[1], outs[0]) <= 1e-5


def _conv_ops(fn, *args):
  """Names of convolution ops in fn's jaxpr and in its lowered StableHLO."""
  jaxpr = str(jax.make_jaxpr(fn)(*args))
  hlo = jax.jit(fn).lower(*args).as_text()
  return [op for op, text in (('conv_general_dilated', jaxpr),
                              ('convolution', hlo)) if op in text]


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('impl', ['matmul', 'auto'])
def test_matmul_path_has_no_convolution(name, impl):
  if impl == 'auto' and jax.default_backend() != 'cpu':
    pytest.skip('auto is the XLA convolution off CPU')
  module = LAYERS[name](8, (5, 5), (2, 2), impl=impl)
  x = jnp.ones((2, 6, 6, 4))
  params = {'params': {'kernel': jnp.ones((5, 5, 4, 8)),
                       'bias': jnp.ones((8,))}}
  loss = lambda p, x: jnp.sum(module.apply(p, x) ** 2)
  assert _conv_ops(module.apply, params, x) == []
  assert _conv_ops(jax.grad(loss, argnums=(0, 1)), params, x) == []
  # Sanity check of the check: the XLA path does show a convolution.
  xla = module.clone(impl='xla')
  assert _conv_ops(xla.apply, params, x)


def _equations(fn, *args):
  """Every equation of fn's jaxpr, nested jaxprs (custom_vjp, jit) included."""
  found = []

  def collect(jaxpr):
    for eqn in jaxpr.eqns:
      found.append(eqn)
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        collect(sub)

  collect(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def _primitives(fn, *args):
  """(primitive name, output dtypes) of every equation fn traces to."""
  return [(eqn.primitive.name, tuple(v.aval.dtype for v in eqn.outvars))
          for eqn in _equations(fn, *args)]


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('size,groups', [(24, 1), (6, 9)])
def test_matmul_path_dots_contract_trailing_lhs_dims(name, size, groups):
  """Every bfloat16 dot contracts its lhs's trailing dims (fwd and bwd).

  XLA:CPU runs only such dots as its fast GEMM; others (e.g. a kernel
  gradient written as patches^T @ dy) get bfloat16 operands upcast to float32
  and run slower than the float32 model. Conv from 6x6 to 3x3 and transposed
  conv from 3x3 to 6x6 split their taps into 3 x 3 groups, each with its own
  dots; 24x24 to 12x12 and back stay whole.
  """
  module = LAYERS[name](8, (5, 5), (2, 2), dtype=jnp.bfloat16, impl='matmul')
  size = size if name == 'conv' else size // 2
  x = jnp.ones((2, size, size, 4))
  params = {'params': {'kernel': jnp.ones((5, 5, 4, 8)),
                       'bias': jnp.ones((8,))}}
  loss = lambda p, x: jnp.sum(module.apply(p, x).astype(jnp.float32) ** 2)
  dots = [eqn for eqn in _equations(jax.grad(loss, argnums=(0, 1)), params, x)
          if eqn.primitive.name == 'dot_general']
  # forward, input gradient, kernel gradient: one dot per pair of groups
  assert len(dots) == 3 * groups
  for eqn in dots:
    (lhs_contract, _), (lhs_batch, _) = eqn.params['dimension_numbers']
    ndim = eqn.invars[0].aval.ndim
    assert not lhs_batch
    assert tuple(lhs_contract) == tuple(
        range(ndim - len(lhs_contract), ndim)), eqn


@pytest.mark.parametrize('name', LAYERS)
def test_split_correlation_adds_its_parts_in_place(name):
  """A split layer's correlation sums its 3 x 3 parts in one array.

  Conv's forward and the transposed convolution's input gradient run one
  matmul per pair of tap groups; the largest part starts the sum and the
  other eight are added in place (dynamic_update_slice), so the sum is
  written once rather than fused, as padded parts added together, into
  every consumer. The values are checked against XLA above.
  """
  module = LAYERS[name](8, (5, 5), (2, 2), impl='matmul')
  x = jnp.ones((2, 6, 6, 4) if name == 'conv' else (2, 3, 3, 4))
  params = module.init(jax.random.key(0), x)
  loss = lambda p, x: jnp.sum(module.apply(p, x) ** 2)
  names = [eqn.primitive.name
           for eqn in _equations(jax.grad(loss, argnums=(0, 1)), params, x)]
  assert names.count('dot_general') == 3 * 9
  assert names.count('dynamic_update_slice') == 8


@pytest.fixture
def small_kernel_grad(monkeypatch):
  """Sets layers.SMALL_KERNEL_GRAD for one test.

  Traces read the threshold, so none made before or during the test may be
  reused across the change.
  """
  def set_threshold(value):
    monkeypatch.setattr(layers, 'SMALL_KERNEL_GRAD', value)
    jax.clear_caches()

  yield set_threshold
  jax.clear_caches()


@pytest.mark.parametrize('dtype,channels,threshold,contract', [
    (jnp.float32, 3, layers.SMALL_KERNEL_GRAD, 0),  # 3 x 75: as it lies
    (jnp.float32, 3, 0, 1),                         # forced: copied
    (jnp.float32, 64, layers.SMALL_KERNEL_GRAD, 0),  # 64 x 1600: as it lies
    (jnp.float32, 128, layers.SMALL_KERNEL_GRAD, 1),  # 128 x 3200: copied
    (jnp.bfloat16, 3, layers.SMALL_KERNEL_GRAD, 1),  # 16-bit: always copied
])
def test_kernel_gradient_product_form(dtype, channels, threshold, contract,
                                      small_kernel_grad):
  """`_rows_t_dot` is a^T @ patches in either form, and picks the form.

  Small float32 products contract dimension 0 of the activations as they
  lie; the others contract the last dimension of a channel-major copy.
  """
  small_kernel_grad(threshold)
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((2, 4, 4, channels)), dtype)
  patches = jnp.asarray(rng.standard_normal((32, 25 * channels)), dtype)
  product = jax.jit(layers._rows_t_dot)(a, patches)
  assert product.dtype == jnp.float32
  assert product.shape == (channels, 25 * channels)
  expected = (np.asarray(a, np.float64).reshape(32, channels).T
              @ np.asarray(patches, np.float64))
  np.testing.assert_allclose(product, expected, rtol=1e-5, atol=1e-4)
  dots = [eqn for eqn in _equations(layers._rows_t_dot, a, patches)
          if eqn.primitive.name == 'dot_general']
  assert len(dots) == 1
  (lhs_contract, _), _ = dots[0].params['dimension_numbers']
  assert tuple(lhs_contract) == (contract,)


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('threshold', [0, 2**40])
def test_float32_kernel_gradient_matches_xla_in_either_form(
    name, threshold, small_kernel_grad):
  """Every float32 kernel gradient copied (0) or contracted as it lies."""
  small_kernel_grad(threshold)
  _compare(name, 2, 5, 12, 'SAME')
  _compare(name, 2, 5, 6, 'SAME')  # splits into tap groups
  module = LAYERS[name](4, (5, 5), (2, 2), impl='matmul')
  x = jnp.ones((2, 6, 6, 3))
  params = module.init(jax.random.key(0), x)
  grad = jax.grad(lambda p: jnp.sum(module.apply(p, x) ** 2))
  contracts = {tuple(eqn.params['dimension_numbers'][0][0])
               for eqn in _equations(grad, params)
               if eqn.primitive.name == 'dot_general'}
  # forward and input gradient: trailing dims; kernel gradient: (0,) as
  # it lies, (1,) copied
  assert (0,) in contracts if threshold else (0,) not in contracts


@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('width_group', [2, None])
def test_bfloat16_patches_move_bit_patterns(reverse, width_group):
  """bfloat16 patches are the float32 ones, built from uint16 bits.

  XLA:CPU would run a bfloat16 pad/stack as float32 with converts both ways.
  Along the width, either taps 3-4 of the split layer (width_group 2) or all
  five taps, whose pairs 0-1 and 2-3 move as one slice each (a reversed one
  with `reverse`).
  """
  g = layers._Geom((12, 12), (6, 6), (5, 5), (2, 2), (1, 1))
  gh = all_taps = layers._TapGroup(0, 5, 0, 6)
  gw = (all_taps if width_group is None else
        layers._groups(g, 2, jnp.ones((5, 5, 8, 8)))[1][width_group])
  width = gw.k1 - gw.k0
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 12, 12, 8)),
                  jnp.bfloat16)
  patches = jax.jit(layers._patches, static_argnums=(1, 2, 3, 4))(
      x, g, gh, gw, reverse)
  expected = layers._patches(x.astype(jnp.float32), g, gh, gw, reverse)
  assert patches.dtype == jnp.bfloat16
  assert patches.shape == (2 * 6 * (gw.o1 - gw.o0), 5 * width * 8)
  np.testing.assert_array_equal(np.asarray(patches, np.float32),
                                np.asarray(expected))
  moves = [(prim, dtypes) for prim, dtypes in
           _primitives(lambda x: layers._patches(x, g, gh, gw, reverse), x)
           if prim in ('pad', 'concatenate', 'slice', 'squeeze',
                       'broadcast_in_dim', 'reshape', 'rev')]
  assert moves and all(dtypes == (jnp.uint16,) for _, dtypes in moves), moves
  assert any(prim == 'rev' for prim, _ in moves) == (reverse and width == 5)
  rows = layers._transposed_rows(x)
  np.testing.assert_array_equal(np.asarray(rows, np.float32),
                                np.asarray(x, np.float32).reshape(-1, 8).T)


@pytest.mark.parametrize('name', LAYERS)
def test_bfloat16_bias_gradient_sums_in_float32(name):
  """Cotangents 1, 1, 2^-7 sum to 2.0078125, which bfloat16 rounds to 2."""
  module = LAYERS[name](1, (1, 1), (1, 1), dtype=jnp.bfloat16, impl='matmul')
  x = jnp.zeros((1, 1, 3, 1))
  params = module.init(jax.random.key(0), x)
  y, vjp = jax.vjp(module.apply, params, x)
  cotangent = jnp.asarray([1.0, 1.0, 2.0**-7], jnp.bfloat16).reshape(y.shape)
  d_params, _ = vjp(cotangent)
  d_bias = d_params['params']['bias']
  assert d_bias.dtype == jnp.float32
  assert float(d_bias[0]) == 2.0078125
  sums = [dtypes for prim, dtypes in
          _primitives(lambda c: vjp(c)[0], cotangent) if prim == 'reduce_sum']
  assert sums == [(jnp.float32,)]


@pytest.mark.parametrize('name', LAYERS)
def test_bfloat16_kernel_gradient_is_not_rounded(name):
  """The float32 kernel gets the matmul's float32 sum, not a bfloat16 one.

  Inputs 1, 1, 2^-7 against cotangents 1 sum to 2.0078125 (bfloat16: 2).
  """
  module = LAYERS[name](1, (1, 1), (1, 1), dtype=jnp.bfloat16, impl='matmul')
  x = jnp.asarray([1.0, 1.0, 2.0**-7], jnp.bfloat16).reshape(1, 1, 3, 1)
  params = module.init(jax.random.key(0), x)
  y, vjp = jax.vjp(module.apply, params, x)
  d_kernel = vjp(jnp.ones_like(y))[0]['params']['kernel']
  assert params['params']['kernel'].dtype == d_kernel.dtype == jnp.float32
  assert float(d_kernel.reshape(())) == 2.0078125


def test_auto_resolves_to_matmul_on_cpu():
  expected = 'matmul' if jax.default_backend() in ('cpu', 'gpu') else 'xla'
  assert layers.resolve_impl('auto') == expected
  assert layers.resolve_impl('xla') == 'xla'
  assert layers.resolve_impl('matmul') == 'matmul'
  assert set(layers.IMPLS) == {'auto', 'xla', 'matmul'}


@pytest.mark.parametrize('name', LAYERS)
def test_bad_impl_raises(name):
  with pytest.raises(ValueError, match=r"'auto', 'xla', 'matmul'"):
    layers.resolve_impl('cudnn')
  with pytest.raises(ValueError, match='conv impl must be one of'):
    LAYERS[name](4, (3, 3), impl='eigen').init(jax.random.key(0),
                                               jnp.ones((1, 4, 4, 3)))


@pytest.mark.parametrize('name', LAYERS)
def test_bad_padding_raises(name):
  with pytest.raises(ValueError, match='padding'):
    LAYERS[name](4, (3, 3), padding='CIRCULAR', impl='matmul').init(
        jax.random.key(0), jnp.ones((1, 4, 4, 3)))


def _geometries():
  """The _Geom of every correlation the GRID's layers run."""
  found = []
  for (stride, kernel), cases in GRID.items():
    for size, padding in cases:
      hw, k_hw, strides = (size,) * 2, (kernel,) * 2, (stride,) * 2
      pads = jax.lax.padtype_to_pads(hw, k_hw, strides, padding)
      found.append(layers._conv_geom(hw, k_hw, strides, pads))
      pads = [layers._conv_transpose_pads(kernel, stride, padding)] * 2
      found.append(layers._conv_t_geom(hw, k_hw, strides, pads))
  return found


@pytest.mark.parametrize('g', _geometries())
def test_tap_groups_cover_exactly_the_taps_read_inside(g):
  """Each (output, tap) pair reading inside the input is in one group."""
  n_in, n_out, k, s, lo = (g.in_hw[0], g.out_hw[0], g.k_hw[0], g.strides[0],
                           g.lo[0])
  inside = {(o, t) for o in range(n_out) for t in range(k)
            if 0 <= o * s + t - lo < n_in}
  pairs = [(o, t) for gr in layers._tap_groups(n_in, n_out, k, s, lo)
           for o in range(gr.o0, gr.o1) for t in range(gr.k0, gr.k1)]
  assert len(pairs) == len(set(pairs)) and set(pairs) == inside
  assert layers._valid_share(g) == pytest.approx(
      (len(inside) / (n_out * k)) ** 2)


def test_reference_layers_skip_the_taps_in_the_padding():
  """At 48x48 the 3x3 and 6x6 layers multiply only what they read inside.

  Their tap splits cut the forward matmuls to 64% and 81% of the dense
  count (the 12x12 and 24x24 layers, 90% and 95% inside, stay whole).
  """
  for size, per_axis in ((6, 0.8), (12, 0.9), (24, 0.95), (48, 0.975)):
    inside = per_axis ** 2
    g = layers._Geom((size,) * 2, (size // 2,) * 2, (5, 5), (2, 2), (1, 1))
    assert layers._valid_share(g) == pytest.approx(inside)
    kernel = jnp.ones((5, 5, 8, 16))
    split = len(layers._groups(g, 2, kernel)[0]) > 1
    assert split == (inside < layers.SPLIT_BELOW)
    module = layers.Conv(16, (5, 5), (2, 2), impl='matmul')
    x = jnp.ones((2, size, size, 8))
    params = {'params': {'kernel': kernel, 'bias': jnp.zeros((16,))}}
    macs = sum(np.prod(eqn.invars[0].aval.shape) * eqn.outvars[0].aval.shape[-1]
               for eqn in _equations(module.apply, params, x)
               if eqn.primitive.name == 'dot_general')
    dense = 2 * (size // 2) ** 2 * 25 * 8 * 16
    assert macs == pytest.approx(dense * (inside if split else 1.0))


def test_only_layers_with_enough_work_split(monkeypatch):
  """The reference 3x3 layer splits; the same shape with 8 channels not."""
  monkeypatch.setattr(layers, 'SPLIT_MIN_MACS', DEFAULT_SPLIT_MIN_MACS)
  g = layers._Geom((6, 6), (3, 3), (5, 5), (2, 2), (1, 1))
  for batch, cin, cout, split in ((64, 256, 512, True), (8, 8, 16, False)):
    kernel = np.broadcast_to(np.float32(0), (5, 5, cin, cout))
    assert (len(layers._groups(g, batch, kernel)[0]) > 1) == split
