"""Times the reference DCGAN's convolutions and training iteration per impl.

Reference network (the 'tutorial' preset at 48x48, batch 64): G projects z to
3x3x512, then stride-2 5x5 SAME transposed convolutions 512->256->128->64->3
(3 -> 6 -> 12 -> 24 -> 48); D is stride-2 5x5 SAME convolutions
3->64->128->256->512 (48 -> 24 -> 12 -> 6 -> 3) and a dense logit.

Prints
* per layer: median seconds of the jitted forward and of forward + backward
  (gradients w.r.t. input, kernel and bias) for each `--impls`;
* the full iteration: 1 D update (D on a real and a fake batch) + 2 G updates,
  sigmoid cross-entropy, optax.adam(2e-4, b1=0.5), one jitted step: compile
  seconds, then the median img/s over `--repeats` runs of `--iters` steps,
  GFLOP/s, and the process CPU seconds per step (on a shared machine the
  wall-clock figures swing with other load; CPU-s/step much less so).

Everything runs inside `heap.reuse_freed_memory()`, as the training loop does.

GFLOP/s counting rule: 2 * multiply-adds of every convolution and dense layer
(a transposed convolution counts the MACs of its non-zero input pixels only,
i.e. H_in*W_in*k*k*C_in*C_out per image), forward = 1x, backward = 2x, for
every pass the step is defined to run (the count ignores the gradients XLA
prunes as unused, e.g. D's kernel gradient in a G update, which makes the
executed work about 10% less). Per iteration: 7 * G forward + 12 * D forward
(D step: G fwd + 2 * 3 * D fwd; each G step: 3 * G fwd + 3 * D fwd), 222
GFLOP at batch 64.

Run from the repository root: `python benchmarks/conv_layers.py`.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import optax

import reference_step
from dcgan import heap, layers
from dcgan import models

IMAGE_SIZE = 48
LATENT_DIM = 100
KERNEL = 5
# (name, layer class, input size, in features, out features)
REFERENCE_LAYERS = (
    ('G deconv1', layers.ConvTranspose, 3, 512, 256),
    ('G deconv2', layers.ConvTranspose, 6, 256, 128),
    ('G deconv3', layers.ConvTranspose, 12, 128, 64),
    ('G deconv4', layers.ConvTranspose, 24, 64, 3),
    ('D conv0', layers.Conv, 48, 3, 64),
    ('D conv1', layers.Conv, 24, 64, 128),
    ('D conv2', layers.Conv, 12, 128, 256),
    ('D conv3', layers.Conv, 6, 256, 512),
)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=5,
                      help='timed runs per measurement; medians are reported')
  parser.add_argument('--iters', type=int, default=3,
                      help='training steps per timed run (matmul impl)')
  parser.add_argument('--xla-iters', type=int, default=1,
                      help='training steps per timed run for the slow xla impl')
  parser.add_argument('--impls', default='xla,matmul',
                      help='comma-separated conv impls to compare')
  parser.add_argument('--dtype', default='float32',
                      help='compute dtype (params stay float32)')
  parser.add_argument('--skip-layers', action='store_true',
                      help='skip the per-layer timings')
  parser.add_argument('--skip-train', action='store_true',
                      help='skip the full training iteration')
  return parser.parse_args(argv)


def block(tree):
  jax.tree.map(lambda a: a.block_until_ready(), tree)
  return tree


def layer_macs(cls, size, cin, cout, batch):
  """Multiply-adds: per output pixel (conv) or per input pixel (transposed)."""
  out = size // 2 if cls is layers.Conv else size
  return batch * out * out * KERNEL * KERNEL * cin * cout


def bench_layers(args, impls, dtype):
  print(f'\nPer layer (batch {args.batch_size}, {jnp.dtype(dtype).name}, '
        f'median of {args.repeats}): seconds (GFLOP/s); fwd+bwd = output and '
        'gradients w.r.t. input, kernel and bias')
  print(f'{"layer":10s} {"shape":21s}' + ''.join(
      f' {impl + " fwd":>15s} {impl + " fwd+bwd":>15s}' for impl in impls) +
        ('  speedup fwd / fwd+bwd' if len(impls) == 2 else ''))
  key = jax.random.key(0)
  for name, cls, size, cin, cout in REFERENCE_LAYERS:
    x = jax.random.normal(key, (args.batch_size, size, size, cin), dtype)
    flops = 2 * layer_macs(cls, size, cin, cout, args.batch_size)
    row, times = f'{name:10s} {f"{size}x{size}x{cin}->{cout}":21s}', []
    for impl in impls:
      module = cls(cout, (KERNEL, KERNEL), (2, 2), 'SAME', dtype=dtype,
                   impl=impl)
      params = jax.jit(module.init)(key, x)
      fwd = jax.jit(module.apply)
      cotangent = jax.random.normal(key, jax.eval_shape(fwd, params, x).shape,
                                    dtype)

      @jax.jit
      def fwd_bwd(params, x, cotangent, module=module):
        y, vjp = jax.vjp(module.apply, params, x)
        return y, vjp(cotangent)

      t_f = reference_step.median_seconds(
          lambda: block(fwd(params, x)), args.repeats)
      t_fb = reference_step.median_seconds(
          lambda: block(fwd_bwd(params, x, cotangent)), args.repeats)
      times.append((t_f, t_fb))
      row += (f' {t_f:7.4f} ({flops / t_f / 1e9:4.0f})'
              f' {t_fb:7.4f} ({3 * flops / t_fb / 1e9:4.0f})')
    if len(impls) == 2:
      (f0, fb0), (f1, fb1) = times
      row += f'  {f0 / f1:6.1f}x / {fb0 / fb1:5.1f}x'
    print(row, flush=True)


def iteration_flops(batch, generator, discriminator):
  """2 * MACs of one iteration under the counting rule in the docstring."""
  s = IMAGE_SIZE // 16
  g_macs = LATENT_DIM * s * s * 8 * generator.base_features
  d_macs = s * s * 8 * discriminator.base_features  # the logit layer
  for _, cls, size, cin, cout in REFERENCE_LAYERS:
    macs = layer_macs(cls, size, cin, cout, 1)
    if cls is layers.ConvTranspose:
      g_macs += macs
    else:
      d_macs += macs
  return 2 * batch * (7 * g_macs + 12 * d_macs)


def make_train_step(generator, discriminator, optimizer):
  """One iteration: 1 D update, then 2 G updates, all in one jitted step."""
  bce = optax.sigmoid_binary_cross_entropy

  def d_loss(d_params, d_stats, fake, real):
    variables = {'params': d_params, 'batch_stats': d_stats}
    real_logits, state = discriminator.apply(variables, real,
                                             mutable=['batch_stats'])
    variables = {'params': d_params, 'batch_stats': state['batch_stats']}
    fake_logits, state = discriminator.apply(variables, fake,
                                             mutable=['batch_stats'])
    loss = (bce(real_logits, jnp.ones_like(real_logits)).mean() +
            bce(fake_logits, jnp.zeros_like(fake_logits)).mean())
    return loss, state['batch_stats']

  def generate(g_params, g_stats, z):
    fake, state = generator.apply({'params': g_params, 'batch_stats': g_stats},
                                  z, mutable=['batch_stats'])
    return fake, state['batch_stats']

  def g_loss(g_params, g_stats, d_params, d_stats, z):
    fake, g_stats = generate(g_params, g_stats, z)
    logits, d_state = discriminator.apply(
        {'params': d_params, 'batch_stats': d_stats}, fake,
        mutable=['batch_stats'])
    loss = bce(logits, jnp.ones_like(logits)).mean()
    return loss, (g_stats, d_state['batch_stats'])

  def step(state, real, key):
    g_params, g_stats, g_opt, d_params, d_stats, d_opt = state
    keys = jax.random.split(key, 3)
    batch = real.shape[0]
    z = jax.random.normal(keys[0], (batch, LATENT_DIM))
    fake, g_stats = generate(g_params, g_stats, z)
    (_, d_stats), grads = jax.value_and_grad(d_loss, has_aux=True)(
        d_params, d_stats, jax.lax.stop_gradient(fake), real)
    updates, d_opt = optimizer.update(grads, d_opt, d_params)
    d_params = optax.apply_updates(d_params, updates)
    for k in keys[1:]:
      z = jax.random.normal(k, (batch, LATENT_DIM))
      (_, (g_stats, d_stats)), grads = jax.value_and_grad(
          g_loss, has_aux=True)(g_params, g_stats, d_params, d_stats, z)
      updates, g_opt = optimizer.update(grads, g_opt, g_params)
      g_params = optax.apply_updates(g_params, updates)
    return g_params, g_stats, g_opt, d_params, d_stats, d_opt

  return jax.jit(step, donate_argnums=0)


def bench_train(args, impl, dtype):
  generator = models.Generator(image_size=IMAGE_SIZE, conv_impl=impl,
                               dtype=dtype)
  discriminator = models.Discriminator(conv_impl=impl, dtype=dtype)
  optimizer = optax.adam(2e-4, b1=0.5)
  key = jax.random.key(0)
  z = jnp.zeros((args.batch_size, LATENT_DIM))
  real = jax.random.uniform(key, (args.batch_size, IMAGE_SIZE, IMAGE_SIZE, 3),
                            minval=-1, maxval=1)
  g_vars = jax.jit(generator.init)(key, z)
  d_vars = jax.jit(discriminator.init)(key, real)
  state = (g_vars['params'], g_vars['batch_stats'],
           optimizer.init(g_vars['params']), d_vars['params'],
           d_vars['batch_stats'], optimizer.init(d_vars['params']))
  step = make_train_step(generator, discriminator, optimizer)

  compiled, compile_s = reference_step.compile_timed(step, state, real, key)
  state = block(compiled(state, real, key))  # warm-up
  iters = args.xla_iters if impl == 'xla' else args.iters
  rates, cpu_seconds = [], []
  for r in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(iters):
      state = compiled(state, real, jax.random.fold_in(key, r * iters + i))
    block(state)
    rates.append(args.batch_size * iters / (time.perf_counter() - t0))
    cpu_seconds.append((time.process_time() - c0) / iters)
  rate = statistics.median(rates)
  gflops = iteration_flops(args.batch_size, generator,
                           discriminator) / 1e9 * rate / args.batch_size
  print(f'{impl:7s} compile {compile_s:5.1f} s | {rate:6.1f} img/s median '
        f'(min {min(rates):.1f}, max {max(rates):.1f}; {args.repeats} runs of '
        f'{iters} step(s)) | {gflops:4.0f} GFLOP/s | '
        f'{statistics.median(cpu_seconds):.2f} CPU-s/step', flush=True)
  return rate


def main(argv=None):
  args = parse_args(argv)
  impls = [i.strip() for i in args.impls.split(',') if i.strip()]
  for impl in impls:
    layers.resolve_impl(impl)  # fails early on a bad name
  dtype = jnp.dtype(args.dtype)
  print(f'jax {jax.__version__}, backend {jax.default_backend()}, '
        f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; '
        f'auto -> {layers.resolve_impl("auto")}')
  # As the training loop runs: without it every call faults in fresh pages
  # for its large buffers (the matmul path's patch and column matrices
  # most: D conv1's forward took 0.044 s instead of 0.023).
  with heap.reuse_freed_memory():
    if not args.skip_layers:
      bench_layers(args, impls, dtype)
    if not args.skip_train:
      flops = iteration_flops(args.batch_size, models.Generator(IMAGE_SIZE),
                              models.Discriminator())
      print(f'\nFull iteration (1 D + 2 G updates, batch {args.batch_size}, '
            f'{jnp.dtype(dtype).name}, {flops / 1e9:.0f} GFLOP counted)')
      rates = [bench_train(args, impl, dtype) for impl in impls]
      if len(impls) == 2:
        print(f'{impls[1]} / {impls[0]}: {rates[1] / rates[0]:.1f}x')
  print(f'load average at the end: {os.getloadavg()[0]:.1f} '
        '(the CPUs may be shared; CPU-s/step is the less noisy figure)')


if __name__ == '__main__':
  main()
