r"""Where a training step's time goes, layer by layer, ours against PyTorch.

  pip install -e '.[bench]'      # torch==2.13.0, the CPU build
  python benchmarks/layer_times.py --dtype=float32 --dtype=bfloat16

Both frameworks run the reference iteration of benchmarks/torch_reference.py
(batch 64, 48x48; PyTorch channels_last, its faster layout here), each in its
own process, warmed up, then profiled over --profiled_steps steps.

* Ours: a `jax.profiler` trace of the jitted step. Every XLA op is charged to
  the layer its op_name names (`jvp(Discriminator)/conv1/...`; `transpose(`
  marks the backward pass) and to "matmul" (an op whose computation holds a
  dot) or "other" (patch matrices, col2im, kernel-gradient assembly, BatchNorm
  ...). XLA:CPU runs independent ops concurrently, so a moment shared by k
  ops is charged 1/k to each: the rows add up to the step's wall time.
* PyTorch: `torch.profiler`'s total time of each convolution and convolution
  backward, assigned to a layer by its (input, weight) shapes; the rest of
  the step is everything else (BatchNorm, activations, Adam, autograd).

The profilers add some overhead to both (the ms per step they print are
higher than benchmarks/torch_reference.py's); compare rows within a run.
"""

import collections
import glob
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags

import reference_step
import torch_reference

_DTYPE = flags.DEFINE_multi_enum('dtype', ['float32', 'bfloat16'],
                                 ['float32', 'bfloat16'], 'Compute dtypes.')
_STEPS = flags.DEFINE_integer('profiled_steps', 5, 'Profiled steps.')
_WORKER = flags.DEFINE_string('layer_worker', None, 'Internal: jax or torch.')

# G's and D's convolutions, in network order.
LAYERS = ('G deconv1', 'G deconv2', 'G deconv3', 'G deconv4',
          'D conv0', 'D conv1', 'D conv2', 'D conv3')


# The configuration torch_reference times: the reference recipe, batch 64.
_CONFIG = torch_reference._config  # pylint: disable=protected-access


def _hlo_ops(hlo: str) -> dict[str, tuple[str, bool]]:
  """{instruction: (op_name, runs a matmul)} from compiled HLO text."""
  bodies = reference_step.hlo_computations(hlo)
  ops = {}
  for line in hlo.split('\n'):
    m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(', line)
    if not m:
      continue
    name = re.search(r'op_name="([^"]*)"', line)
    called = re.search(r'calls=%?([\w.\-]+)', line)
    body = bodies.get(called.group(1), []) if called else []
    matmul = m.group(2) == 'dot' or any(' dot(' in b for b in body)
    ops[m.group(1)] = (name.group(1) if name else '', matmul)
  return ops


def _layer_of(op_name: str) -> str:
  model = ('G ' if 'Generator' in op_name else
           'D ' if 'Discriminator' in op_name else '')
  for part in op_name.split('/'):
    if model and re.fullmatch(r'(de)?conv\d|bn\d|project|logit', part):
      return model + part
  return 'rest'


def jax_worker(dtype: str, steps: int) -> dict:
  """{'step_ms': .., 'rows': [[layer, fwd|bwd, matmul|other, ms per step]]}."""
  import jax  # pylint: disable=g-import-not-at-top

  config = _CONFIG('train', 64, dtype)
  state, step = reference_step.build(config)
  shape = (config.batch_size, config.image_size, config.image_size, 3)
  batch = {'image': jax.random.uniform(jax.random.key(1), shape,
                                       minval=-1, maxval=1)}
  rng = jax.random.key(2)
  # The executable timed is the one whose HLO names the ops.
  step = step.lower(state, batch, rng).compile()
  ops = _hlo_ops(step.as_text())
  with tempfile.TemporaryDirectory() as logdir:
    for _ in range(3):
      state, metrics = step(state, batch, rng)
    jax.block_until_ready((state, metrics))
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(steps):
        state, metrics = step(state, batch, rng)
      jax.block_until_ready((state, metrics))
      seconds = time.perf_counter() - start
    traces = glob.glob(os.path.join(logdir, '**', 'perfetto_trace.json.gz'),
                       recursive=True)
    if not traces:
      raise RuntimeError(f'jax.profiler wrote no perfetto trace in {logdir}')
    with gzip.open(traces[0]) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  spans = [(e['ts'], e['ts'] + e['dur'], e['name']) for e in events
           if e.get('ph') == 'X' and e.get('name') in ops]
  if not spans:
    raise RuntimeError('the trace names none of the step\'s XLA ops')

  def row(name):
    op_name, matmul = ops[name]
    return (_layer_of(op_name), 'bwd' if 'transpose(' in op_name else 'fwd',
            'matmul' if matmul else 'other')

  charged = share_wall_time(spans, row)
  return {'step_ms': seconds / steps * 1e3,
          'rows': [[*k, v / steps / 1e3] for k, v in charged.items()]}


def share_wall_time(spans, row) -> collections.Counter:
  """Wall time of (start, end, name) spans, summed by `row(name)`.

  A stretch of time during which k spans run is charged 1/k to each, so the
  sums add up to the time any span runs.
  """
  edges = sorted([(t0, 1, i) for i, (t0, _, _) in enumerate(spans)] +
                 [(t1, -1, i) for i, (_, t1, _) in enumerate(spans)])
  charged, running, last = collections.Counter(), set(), edges[0][0]
  for t, kind, i in edges:
    for j in running:
      charged[row(spans[j][2])] += (t - last) / len(running)
    if kind > 0:
      running.add(i)
    else:
      running.discard(i)
    last = t
  return charged


def torch_worker(dtype: str, steps: int) -> dict:
  """{'step_ms': .., 'rows': [[layer, fwd|bwd, 'conv', ms per step]]}."""
  import torch  # pylint: disable=g-import-not-at-top

  config = _CONFIG('train', 64, dtype)
  b, s = config.batch_size, config.image_size
  gf, df = config.model.g_base_features, config.model.d_base_features
  ks = config.model.kernel_size
  shapes = {}  # (input shape, weight shape) -> layer
  g_widths, d_widths = [8 * gf, 4 * gf, 2 * gf, gf, 3], [3, df, 2 * df,
                                                         4 * df, 8 * df]
  for i in range(4):
    n = s // 16 * 2**i
    shapes[((b, g_widths[i], n, n), (g_widths[i], g_widths[i + 1], ks, ks))] = (
        f'G deconv{i + 1}')
    n = s // 2**i
    shapes[((b, d_widths[i], n, n), (d_widths[i + 1], d_widths[i], ks, ks))] = (
        f'D conv{i}')
  worker = torch_reference._torch_worker  # pylint: disable=protected-access
  run, _ = worker(config, 'train', channels_last=True)
  run(3)
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                              record_shapes=True) as prof:
    seconds = run(steps)
  charged = collections.Counter()
  for event in prof.key_averages(group_by_input_shape=True):
    inputs = [tuple(x) for x in event.input_shapes if x]
    if event.key == 'aten::convolution':
      key, direction = (inputs[0], inputs[1]), 'fwd'
    elif event.key == 'aten::convolution_backward':
      key, direction = (inputs[1], inputs[2]), 'bwd'
    else:
      continue
    if key not in shapes:
      raise RuntimeError(f'a convolution of shapes {key} is no layer of '
                         f'the reference network: {sorted(shapes)}')
    charged[(shapes[key], direction, 'conv')] += event.cpu_time_total
  return {'step_ms': seconds / steps * 1e3,
          'rows': [[*k, v / steps / 1e3] for k, v in charged.items()]}


def _run_worker(framework: str, dtype: str, steps: int) -> dict:
  out = subprocess.run(
      [sys.executable, __file__, f'--layer_worker={framework}',
       f'--dtype={dtype}', f'--profiled_steps={steps}'],
      stdout=subprocess.PIPE, text=True, check=True)
  return json.loads(out.stdout.strip().split('\n')[-1])


def main(argv):
  del argv
  if _WORKER.value:
    from dcgan import heap  # pylint: disable=g-import-not-at-top
    worker = jax_worker if _WORKER.value == 'jax' else torch_worker
    # Both workers, as torch_reference's and the training loop run: neither
    # side pays for fresh pages.
    with heap.reuse_freed_memory():
      print(json.dumps(worker(_DTYPE.value[0], _STEPS.value)))
    return
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  print(f'# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, '
        f'load {os.getloadavg()[0]:.2f}; jax {jax.__version__}, '
        f'torch {torch.__version__}')
  for dtype in dict.fromkeys(_DTYPE.value):
    ours = _run_worker('jax', dtype, _STEPS.value)
    theirs = _run_worker('torch', dtype, _STEPS.value)
    o, t = collections.Counter(), collections.Counter()
    for layer, direction, kind, ms in ours['rows']:
      o[(layer, direction, kind)] += ms
    for layer, direction, _, ms in theirs['rows']:
      t[(layer, direction)] += ms
    print(f'\n## {dtype}: ours {ours["step_ms"]:.0f} ms a step, PyTorch '
          f'{theirs["step_ms"]:.0f} ms (profiled, {_STEPS.value} steps)')
    print('layer | ours fwd (matmul + other) | ours bwd (matmul + other) | '
          'ours total | PyTorch fwd | PyTorch bwd | PyTorch total | '
          'ours - PyTorch')
    for layer in LAYERS:
      cells, ours_total = [], 0.0
      for d in ('fwd', 'bwd'):
        mm, other = o[(layer, d, 'matmul')], o[(layer, d, 'other')]
        cells.append(f'{mm + other:.1f} ({mm:.1f} + {other:.1f})')
        ours_total += mm + other
      tf, tb = t[(layer, 'fwd')], t[(layer, 'bwd')]
      print(f'{layer} | {cells[0]} | {cells[1]} | {ours_total:.1f} | '
            f'{tf:.1f} | {tb:.1f} | {tf + tb:.1f} | '
            f'{ours_total - tf - tb:+.1f}')
    conv_ours = sum(v for (layer, _, _), v in o.items() if layer in LAYERS)
    conv_theirs = sum(t.values())
    rest = {}
    for (layer, _, _), v in o.items():
      if layer not in LAYERS:
        rest[layer] = rest.get(layer, 0.0) + v
    print(f'all convolutions | | | {conv_ours:.1f} | | | {conv_theirs:.1f} | '
          f'{conv_ours - conv_theirs:+.1f}')
    print(f'everything else | | | {sum(rest.values()):.1f} | | | '
          f'{theirs["step_ms"] - conv_theirs:.1f} | '
          f'{sum(rest.values()) - theirs["step_ms"] + conv_theirs:+.1f}')
    print('ours, everything else (rest: outside the layers): ' + ', '.join(
        f'{k} {v:.1f}' for k, v in sorted(rest.items(), key=lambda kv: -kv[1])))


if __name__ == '__main__':
  app.run(main)
