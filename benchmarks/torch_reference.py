r"""The reference DCGAN in PyTorch, timed in turn with ours on the same machine.

  pip install -e '.[bench]'            # torch==2.13.0, the CPU build
  python benchmarks/torch_reference.py                     # training, 5 rounds
  python benchmarks/torch_reference.py --bench=generate    # samples, batch 500
  python benchmarks/torch_reference.py --variant=jax-float32 --variant=torch-float32-nchw

The PyTorch model is the same network as dcgan.models (the tutorial's: G
projects z to 3x3x512 and four 5x5 stride-2 transposed convolutions double it
to 48x48; D is four 5x5 stride-2 convolutions and a dense logit; BatchNorm
momentum 0.1 in PyTorch's convention = 0.9 in Flax's, eps 1e-5) and the same
iteration: one D update on a real and a generated batch, then two G updates
reusing the D update's latents, Adam 2e-4 / 0.5; the first G update reuses the
D update's forward pass of G in both. PyTorch runs eager, with D's
parameters frozen during the G updates so that no unused D gradients are
computed, in both memory layouts (NCHW and channels_last); bf16 variants run
the forward passes under `torch.autocast('cpu', torch.bfloat16)` with fp32
parameters, as ours does with `config.model.dtype='bfloat16'`. Both run
inside `dcgan.heap.reuse_freed_memory()`: ours as the training loop and
`dcgan.sampling` do, PyTorch's so that it does not pay for fresh pages
either (without it PyTorch's fp32 step faulted in 11-16k pages a step and
ran ~1.5% slower).

Each variant runs in its own process, built and warmed up once. The parent then
asks them in turn, round after round, for a timed block of --steps steps, so
a noisy phase of a shared machine hits every variant alike (each round
starting with the next variant); ratios are taken within each round and
their median printed, with their quartiles from 4 rounds on. The GEMM rate
(a 2048^3 matrix product, fp32 and bf16, through jnp.dot with a float32
result and torch.mm) is measured in the same processes; each variant's
rate is also given as a share of the best fp32 and the best bf16 GEMM rate.
"warm-up s" runs from a worker's start to its first timed block (imports,
building the state, compiling, two untimed steps); "compile s" is the part
of it that XLA spends lowering and compiling our timed function.

FLOP counting rule (benchmarks/flops.py): 2 x multiply-adds of the conv and
dense layers the step runs (forward 1x; backward 2x, or 1x through the frozen D
of a G update).
"""

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

import flops
from experiments.configs import avatar

VARIANTS = ('jax-float32', 'jax-bfloat16', 'torch-float32-nchw',
            'torch-float32-nhwc', 'torch-bfloat16-nchw', 'torch-bfloat16-nhwc')

_BENCH = flags.DEFINE_enum('bench', 'train', ['train', 'generate'],
                           'What to time: training steps or generation.')
_VARIANT = flags.DEFINE_multi_enum('variant', list(VARIANTS), VARIANTS,
                                   'Variants to run.')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', None, 'Batch size (default: 64 to train, 500 to generate).')
_STEPS = flags.DEFINE_integer('steps', 10, 'Steps (or batches) per block.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Rounds.')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: run one variant.')


# --------------------------------------------------------------- workers --


def _config(bench: str, batch_size: int, dtype: str):
  config = avatar.get_config()
  config.batch_size = batch_size
  config.model.dtype = dtype
  return config


def _jax_worker(config, bench: str):
  """Returns (run(n) -> seconds, gemm(dtype) -> FLOP/s, compile seconds).

  The compile seconds are XLA's lowering and compiling of the timed function
  alone: state initialisation and the first steps are not in them.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import reference_step  # pylint: disable=g-import-not-at-top
  from dcgan import models, sampling  # pylint: disable=g-import-not-at-top

  state, step = reference_step.build(config)
  holder = {'state': state}
  rng = jax.random.key(2)
  if bench == 'train':
    shape = (config.batch_size, config.image_size, config.image_size, 3)
    batch = {'image': jax.random.uniform(jax.random.key(1), shape,
                                         minval=-1, maxval=1)}
    step, compile_seconds = reference_step.compile_timed(step, state, batch,
                                                         rng)

    def run(n):
      start = time.perf_counter()
      state = holder['state']
      for _ in range(n):
        state, metrics = step(state, batch, rng)
      jax.block_until_ready((state, metrics))
      holder['state'] = state
      return time.perf_counter() - start
  else:
    generator, _ = models.create_models(config.model, config.image_size)

    @jax.jit
    def generate_uint8(g_params, g_batch_stats, key):
      latents = sampling.sample_latents(key, config.batch_size,
                                        config.latent_dim, config.latent_dist)
      images = sampling.generate(generator, g_params, g_batch_stats, latents)
      return jnp.clip(jnp.round((images + 1) * 127.5), 0, 255).astype(
          jnp.uint8)

    generate_uint8, compile_seconds = reference_step.compile_timed(
        generate_uint8, state.g_params, state.g_batch_stats, rng)

    def run(n):
      state = holder['state']
      start = time.perf_counter()
      for i in range(n):
        np.asarray(generate_uint8(state.g_params, state.g_batch_stats,
                                  jax.random.fold_in(rng, i)))
      return time.perf_counter() - start

  return run, reference_step.gemm_rate, compile_seconds


def _torch_models(config, channels_last: bool):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  s16 = config.image_size // 16
  gf, df, k = (config.model.g_base_features, config.model.d_base_features,
               config.model.kernel_size)

  def init(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
      nn.init.normal_(module.weight, 0.0, 0.02)
      nn.init.zeros_(module.bias)

  class Generator(nn.Module):

    def __init__(self):
      super().__init__()
      self.project = nn.Linear(config.latent_dim, s16 * s16 * 8 * gf)
      self.bn0 = nn.BatchNorm2d(8 * gf, momentum=0.1, eps=1e-5)
      widths = [8 * gf, 4 * gf, 2 * gf, gf, 3]
      self.deconvs = nn.ModuleList(
          nn.ConvTranspose2d(widths[i], widths[i + 1], k, stride=2,
                             padding=k // 2, output_padding=1)
          for i in range(4))
      self.bns = nn.ModuleList(
          nn.BatchNorm2d(widths[i + 1], momentum=0.1, eps=1e-5)
          for i in range(2))  # the last hidden layer has no BN (tutorial)

    def forward(self, latents):
      x = self.project(latents).view(-1, 8 * gf, s16, s16)
      if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
      x = torch.relu(self.bn0(x))
      for i, deconv in enumerate(self.deconvs):
        x = deconv(x)
        if i < 2:
          x = self.bns[i](x)
        if i < 3:
          x = torch.relu(x)
      return torch.tanh(x.float())

  class Discriminator(nn.Module):

    def __init__(self):
      super().__init__()
      widths = [3, df, 2 * df, 4 * df, 8 * df]
      self.convs = nn.ModuleList(
          nn.Conv2d(widths[i], widths[i + 1], k, stride=2, padding=k // 2)
          for i in range(4))
      self.bns = nn.ModuleList(
          nn.BatchNorm2d(widths[i + 1], momentum=0.1, eps=1e-5)
          for i in range(1, 4))
      self.logit = nn.Linear(s16 * s16 * 8 * df, 1)

    def forward(self, images):
      x = images
      for i, conv in enumerate(self.convs):
        x = conv(x)
        if i > 0:
          x = self.bns[i - 1](x)
        x = nn.functional.leaky_relu(x, 0.2)
      return self.logit(x.flatten(1))[:, 0].float()

  torch.manual_seed(0)
  g, d = Generator(), Discriminator()
  g.apply(init)
  d.apply(init)
  if channels_last:
    g, d = g.to(memory_format=torch.channels_last), d.to(
        memory_format=torch.channels_last)
  return g, d


def _torch_worker(config, bench: str, channels_last: bool):
  """Returns (run(n) -> seconds, gemm(dtype) -> FLOP/s)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(os.cpu_count())
  g, d = _torch_models(config, channels_last)
  bf16 = config.model.dtype == 'bfloat16'

  def autocast():
    if bf16:
      return torch.autocast('cpu', dtype=torch.bfloat16)
    return contextlib.nullcontext()

  b, s = config.batch_size, config.image_size
  real = torch.rand(b, 3, s, s) * 2 - 1
  if channels_last:
    real = real.contiguous(memory_format=torch.channels_last)

  if bench == 'train':
    adam = dict(lr=config.g_learning_rate,
                betas=(config.adam_b1, config.adam_b2), eps=config.adam_eps)
    g_opt = torch.optim.Adam(g.parameters(), **adam)
    d_opt = torch.optim.Adam(d.parameters(), **adam)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ones, zeros = torch.ones(b), torch.zeros(b)

    def step():
      latents = torch.rand(b, config.latent_dim) * 2 - 1
      d.requires_grad_(True)
      d_opt.zero_grad(set_to_none=True)
      with autocast():
        # G's graph is kept: the first G update reuses this forward pass
        # (the latents are the same and G has not changed), as ours does.
        fake = g(latents)
        loss = bce(d(real), ones) + bce(d(fake.detach()), zeros)
      loss.backward()
      d_opt.step()
      d.requires_grad_(False)  # G updates need no D weight gradients
      for i in range(config.g_steps_per_d_step):
        g_opt.zero_grad(set_to_none=True)
        with autocast():
          if i:
            fake = g(latents)
          loss = bce(d(fake), ones)
        loss.backward()
        g_opt.step()
      return loss

    def run(n):
      start = time.perf_counter()
      for _ in range(n):
        step()
      return time.perf_counter() - start
  else:
    g.eval()

    def run(n):
      start = time.perf_counter()
      with torch.inference_mode(), autocast():
        for _ in range(n):
          images = g(torch.rand(b, config.latent_dim) * 2 - 1)
          ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(
              0, 2, 3, 1).numpy()
      return time.perf_counter() - start

  def gemm(dtype):
    a = torch.ones(2048, 2048, dtype=getattr(torch, dtype))
    torch.mm(a, a)
    start = time.perf_counter()
    for _ in range(10):
      torch.mm(a, a)
    return 10 * 2 * 2048**3 / (time.perf_counter() - start)

  return run, gemm


def worker_main(variant: str, bench: str, batch_size: int) -> None:
  """Serves 'run N', 'gemm DTYPE' and 'rss' requests on stdin, one a line."""
  framework, dtype = variant.split('-')[:2]
  config = _config(bench, batch_size, dtype)
  with contextlib.ExitStack() as stack:
    start = time.perf_counter()
    from dcgan import heap  # pylint: disable=g-import-not-at-top
    # For the process's life, as the training loop and dcgan.sampling hold
    # it over all their steps: leaving it hands the free heap back to the
    # system, which the next block would fault in again. Both frameworks
    # get it, so neither pays for fresh pages.
    stack.enter_context(heap.reuse_freed_memory())
    compile_seconds = None
    if framework == 'jax':
      run, gemm, compile_seconds = _jax_worker(config, bench)
    else:
      run, gemm = _torch_worker(config, bench, variant.endswith('nhwc'))
    run(2)  # warms up
    reply = {'warmup_s': time.perf_counter() - start,
             'compile_s': compile_seconds}
    print(json.dumps(reply), flush=True)
    for line in sys.stdin:
      verb, arg = line.split()
      if verb == 'run':
        reply = {'seconds': run(int(arg))}
      elif verb == 'gemm':
        reply = {'flops': gemm(arg)}
      else:
        reply = {'peak_rss_mib': resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024}
      print(json.dumps(reply), flush=True)


# ---------------------------------------------------------------- parent --


class Worker:
  """One variant in a child process."""

  def __init__(self, variant: str, bench: str, batch_size: int):
    self.variant = variant
    self.proc = subprocess.Popen(
        [sys.executable, __file__, f'--worker={variant}', f'--bench={bench}',
         f'--batch_size={batch_size}'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self.ready = self._read()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f'{self.variant} worker died; see its stderr above')
    return json.loads(line)

  def ask(self, request: str) -> dict:
    self.proc.stdin.write(request + '\n')
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def in_turn(items: list, round_index: int) -> list:
  """The order of a round: `items` from the round_index-th one, wrapping."""
  start = round_index % len(items)
  return items[start:] + items[:start]


def ratio_text(per_round: list[float], quartiles: bool = True) -> str:
  """'1.03x (1.00-1.05)': the median of per-round ratios and its quartiles.

  The quartiles (the middle half of the rounds' ratios, which shows how far
  the machine's noise moves them) from 4 rounds on, and only if asked.
  """
  text = f'{statistics.median(per_round):.2f}x'
  if quartiles and len(per_round) >= 4:
    q1, _, q3 = statistics.quantiles(per_round, n=4)
    text += f' ({q1:.2f}-{q3:.2f})'
  return text


def main(argv):
  del argv
  bench = _BENCH.value
  batch_size = _BATCH_SIZE.value or (64 if bench == 'train' else 500)
  if _WORKER.value:
    worker_main(_WORKER.value, bench, batch_size)
    return

  import torch  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  config = _config(bench, batch_size, 'float32')
  g_flops, _ = flops.forward_flops(config)
  step_flops = (flops.iteration_flops(config) if bench == 'train'
                else g_flops)
  unit = 'img/s' if bench == 'train' else 'samples/s'
  print(f'# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, '
        f'load {os.getloadavg()[0]:.2f}; jax {jax.__version__}, '
        f'torch {torch.__version__}')
  print(f'# {bench}: batch {batch_size}, 48x48, {step_flops / 1e9:.1f} GFLOP '
        f'per step; {_REPEATS.value} rounds of {_STEPS.value} steps, '
        'variants in turn within each round')

  variants = list(dict.fromkeys(_VARIANT.value))
  workers = [Worker(v, bench, batch_size) for v in variants]
  rates = {v: [] for v in variants}
  gemm = {}
  try:
    for w in workers:  # both frameworks' GEMM rates, same process as the model
      for dtype in ('float32', 'bfloat16'):
        gemm.setdefault((w.variant.split('-')[0], dtype), []).append(
            w.ask(f'gemm {dtype}')['flops'])
    for r in range(_REPEATS.value):
      # Each round starts with the next variant, so that none always runs
      # right after the same other one.
      for w in in_turn(workers, r):
        seconds = w.ask(f'run {_STEPS.value}')['seconds']
        rates[w.variant].append(_STEPS.value * batch_size / seconds)
    peak = {w.variant: w.ask('rss -')['peak_rss_mib'] for w in workers}
  finally:
    for w in workers:
      w.close()

  best_gemm = {d: max(max(v) for (fw, dt), v in gemm.items() if dt == d)
               for d in ('float32', 'bfloat16')}
  for (fw, dt), v in sorted(gemm.items()):
    print(f'# GEMM 2048^3 {fw} {dt}: {max(v) / 1e9:.0f} GFLOP/s')
  def ratio(v, dtype):
    """v's rate / the best torch variant of dtype's, within each round."""
    others = [t for t in variants if t.startswith(f'torch-{dtype}')]
    if not others:
      return '-'
    per_round = [rates[v][i] / max(rates[t][i] for t in others)
                 for i in range(_REPEATS.value)]
    return ratio_text(per_round, quartiles=v not in others)

  print(f'variant | {unit} (median) | min | max | GFLOP/s | % fp32 GEMM | '
        '% bf16 GEMM | warm-up s | compile s | peak RSS MiB | vs torch fp32 | '
        'vs torch bf16')
  for w in workers:
    v = w.variant
    median = statistics.median(rates[v])
    gflops = step_flops / 1e9 * median / batch_size
    compile_s = w.ready['compile_s']
    compile_s = '-' if compile_s is None else f'{compile_s:.1f}'
    print(f'{v} | {median:.1f} | {min(rates[v]):.1f} | {max(rates[v]):.1f} | '
          f'{gflops:.0f} | {100 * gflops * 1e9 / best_gemm["float32"]:.0f}% | '
          f'{100 * gflops * 1e9 / best_gemm["bfloat16"]:.0f}% | '
          f'{w.ready["warmup_s"]:.1f} | {compile_s} | {peak[v]:.0f} | '
          f'{ratio(v, "float32")} | {ratio(v, "bfloat16")}')


if __name__ == '__main__':
  app.run(main)
