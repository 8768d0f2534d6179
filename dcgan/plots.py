"""Pictures of a run: progress across training, loss curves, figures.

Matplotlib is used through `matplotlib.figure.Figure` alone (no pyplot): it
renders with Agg whatever the backend of the process, so this module works the
same in scripts, tests and notebooks.
"""

import json
import math
import re
from typing import Sequence

import numpy as np
from etils import epath
from PIL import Image

from dcgan import images

# What a training record of metrics.jsonl holds; other lines (events) are
# skipped.
METRIC_KEYS = ('d_loss', 'd_loss_real', 'd_loss_fake', 'g_loss', 'd_real',
               'd_fake')
_SAMPLE_NAME = re.compile(r'step_(\d+)\.png')


# Progress across training.


def sample_grids(workdir: epath.PathLike) -> list[tuple[int, epath.Path]]:
  """The fixed-latent grids `samples/step_<N>.png` of a run, by step.

  Raises:
    FileNotFoundError: the run wrote none.
  """
  folder = epath.Path(workdir) / 'samples'
  found = sorted(
      (int(match.group(1)), path) for path in
      (folder.iterdir() if folder.is_dir() else [])
      if (match := _SAMPLE_NAME.fullmatch(path.name)))
  if not found:
    raise FileNotFoundError(
        f'No samples/step_<N>.png in {workdir}: is it a training workdir?')
  return found


def select_steps(steps: Sequence[int], num: int = 6) -> list[int]:
  """About `num` of `steps`, spread geometrically from the first one after 0.

  Early training changes fastest, so a geometric spread (like epochs 1, 5,
  10, 20, 40, 60) shows more of it than an even one. The last step is always
  in; all steps are when there are no more than `num`.
  """
  steps = sorted(set(int(s) for s in steps))
  if len(steps) <= num:
    return steps
  positive = [s for s in steps if s > 0]
  if len(positive) <= num:
    return positive
  targets = np.geomspace(positive[0], positive[-1], num)
  chosen = {positive[-1]}
  for target in targets[:-1]:
    free = [s for s in positive if s not in chosen]
    chosen.add(min(free, key=lambda s: (abs(math.log(s / target)), s)))
  return sorted(chosen)


def progress_strip(workdir: epath.PathLike, num: int = 6) -> np.ndarray:
  """The grids of about `num` steps side by side, each captioned 'step N'.

  Args:
    workdir: a training workdir.
    num: how many steps (see `select_steps`).

  Returns:
    uint8 (H, W, 3).
  """
  grids = dict(sample_grids(workdir))
  return images.concat(
      [images.add_caption(_read_png(grids[step]), f'step {step}')
       for step in select_steps(list(grids), num)], axis=1, padding=8)


def progress_frames(workdir: epath.PathLike) -> list[np.ndarray]:
  """Every grid of the run, in step order, captioned: the frames of a GIF."""
  return [images.add_caption(_read_png(path), f'step {step}')
          for step, path in sample_grids(workdir)]


def _read_png(path: epath.Path) -> np.ndarray:
  with path.open('rb') as f:
    return np.asarray(Image.open(f).convert('RGB'))


# Loss curves.


def read_metrics(path: epath.PathLike) -> dict[str, np.ndarray]:
  """The training records of a metrics.jsonl as columns, by step.

  Lines without the training metrics (events) are skipped; where a resumed
  run logged a step again, its last record wins.

  Returns:
    {'step': int (N,), key: float (N,)} for 'step' and every key found in
    all training records.

  Raises:
    FileNotFoundError: no such file.
    ValueError: no training record in it.
  """
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'{path} not found: is it a training workdir?')
  by_step = {}
  for line in path.read_text().splitlines():
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      # A line cut short by a crash: the rest is still worth plotting.
      continue
    if (isinstance(record, dict) and 'step' in record and
        all(isinstance(record.get(k), (int, float)) for k in METRIC_KEYS)):
      by_step[int(record['step'])] = record
  if not by_step:
    raise ValueError(f'No training metrics in {path} (lines with "step" and '
                     f'{", ".join(METRIC_KEYS)}).')
  records = [by_step[step] for step in sorted(by_step)]
  keys = set.intersection(*(set(r) for r in records))
  columns = {'step': np.array([r['step'] for r in records], np.int64)}
  for key in sorted(keys - {'step'}):
    if all(isinstance(r[key], (int, float)) for r in records):
      columns[key] = np.array([r[key] for r in records], np.float64)
  return columns


def plot_losses(metrics: dict[str, np.ndarray], path: epath.PathLike,
                title: str = '') -> epath.Path:
  """Writes the loss curves of `read_metrics` columns to a PNG.

  Three panels against the step: D's loss on real and generated images and
  G's loss; D's mean output on real images D(x) and on generated ones
  D(G(z)) (both near 0.5 at equilibrium); the gradient norms, when logged.
  """
  from matplotlib import figure  # pylint: disable=g-import-not-at-top

  step = metrics['step']
  has_norms = 'd_grad_norm' in metrics and 'g_grad_norm' in metrics
  num_panels = 3 if has_norms else 2
  fig = figure.Figure(figsize=(5 * num_panels, 3.8), layout='constrained')
  axes = fig.subplots(1, num_panels)
  panels = [
      (axes[0], 'loss', [('d_loss_real', 'D loss, real'),
                         ('d_loss_fake', 'D loss, fake'),
                         ('d_loss', 'D loss'), ('g_loss', 'G loss')]),
      (axes[1], 'D output', [('d_real', 'D(x)'), ('d_fake', 'D(G(z))')]),
  ]
  if has_norms:
    panels.append((axes[2], 'gradient norm', [('d_grad_norm', 'D'),
                                              ('g_grad_norm', 'G')]))
  for ax, label, curves in panels:
    for key, name in curves:
      if key in metrics:
        ax.plot(step, metrics[key], label=name, linewidth=1.2)
    ax.set_xlabel('step')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
  axes[1].axhline(0.5, color='gray', linestyle='--', linewidth=0.8)
  axes[1].set_ylim(0, 1)
  if has_norms:
    axes[2].set_yscale('log')
  if title:
    fig.suptitle(title)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    fig.savefig(f, format='png', dpi=100)
  return path


# Figures of generated images.


def walk_figure(frames: np.ndarray, scale: int = 1) -> np.ndarray:
  """Latent walks as rows: uint8 (num_frames, num_walks, H, W, 3) -> image.

  Row i shows walk i from its start (left) to its end (right), as in the
  DCGAN paper's figure 4.
  """
  frames = np.asarray(frames)
  num_frames, num_walks = frames.shape[:2]
  tiles = frames.transpose(1, 0, 2, 3, 4).reshape((-1,) + frames.shape[2:])
  return images.upscale(images.make_grid(tiles, num_cols=num_frames), scale)


def neighbors_figure(queries: np.ndarray, neighbors: np.ndarray,
                     caption: str = '', scale: int = 1) -> np.ndarray:
  """Each generated image (left) and its nearest training images, by row.

  Args:
    queries: uint8 (Q, H, W, 3).
    neighbors: uint8 (Q, k, H, W, 3), nearest first.
    caption: text above the figure.
    scale: enlargement of small images.
  """
  left = images.make_grid(queries, num_cols=1)
  right = images.make_grid(
      neighbors.reshape((-1,) + neighbors.shape[2:]),
      num_cols=neighbors.shape[1])
  # A grey bar between the generated column and its neighbours.
  bar = np.full((left.shape[0], 4, 3), 160, np.uint8)
  figure_ = images.upscale(images.concat([left, bar, right], padding=0), scale)
  return images.add_caption(figure_, caption) if caption else figure_


def arithmetic_figure(groups: Sequence[np.ndarray], means: np.ndarray,
                      results: np.ndarray, labels: Sequence[str] = ('A', 'B',
                                                                    'C'),
                      scale: int = 1) -> np.ndarray:
  """The DCGAN paper's figure 7: A - B + C from three images per concept.

  Args:
    groups: three uint8 (k, H, W, 3): the images of each concept's latents.
    means: uint8 (3, H, W, 3): the image of each group's mean latent.
    results: uint8 (n, H, W, 3): the image of mean(A) - mean(B) + mean(C)
      first, then those of its jittered neighbours.
    labels: the concepts' names.
    scale: enlargement of small images.

  Returns:
    uint8 image: one captioned row per concept (its images, then its mean's),
    then a row of results.
  """
  rows = []
  signs = ('', '- ', '+ ')
  for sign, label, group, mean in zip(signs, labels, groups, means):
    row = images.concat([images.make_grid(group, num_cols=len(group)),
                         images.make_grid(mean[None])], padding=6)
    rows.append(images.add_caption(images.upscale(row, scale),
                                   f'{sign}{label} (mean at the right)'))
  result = images.upscale(images.make_grid(results, num_cols=len(results)),
                          scale)
  rows.append(images.add_caption(
      result, f'= {labels[0]} - {labels[1]} + {labels[2]}, then neighbours'))
  return images.concat(rows, axis=0, padding=6)
