"""Where a run reports: metrics.jsonl, TensorBoard event files, a progress bar.

TensorBoard files are written with tensorboardX, which needs no TensorFlow.
"""

import json
import sys
import time
from typing import Mapping

import numpy as np
from etils import epath


class MetricWriter:
  """Appends scalars to `<workdir>/metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: epath.PathLike):
    import tensorboardX  # pylint: disable=g-import-not-at-top
    workdir = epath.Path(workdir)
    self._jsonl = open(workdir / 'metrics.jsonl', 'a', encoding='utf-8')
    self._tb = tensorboardX.SummaryWriter(str(workdir / 'tensorboard'))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    record = {'step': int(step), 'time': time.time()}
    record.update({k: float(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for key, value in scalars.items():
      self._tb.add_scalar(key, float(value), int(step))

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    """`image`: uint8 (H, W, 3)."""
    self._tb.add_image(name, image, int(step), dataformats='HWC')

  def flush(self) -> None:
    self._jsonl.flush()
    self._tb.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._tb.close()


class ProgressBar:
  """A one-line bar with images/s and ETA, on stderr when it is a terminal.

  Elsewhere (logs, CI) it prints a plain line every `log_every` updates.
  """

  def __init__(self, total: int, start: int, images_per_step: int,
               stream=None, width: int = 30):
    self.total, self.start = total, start
    self.images_per_step = images_per_step
    self.stream = stream or sys.stderr
    self.width = width
    self._t0 = time.perf_counter()
    self._interactive = getattr(self.stream, 'isatty', lambda: False)()

  def rate(self, step: int) -> float:
    """Images per second since the bar started."""
    elapsed = time.perf_counter() - self._t0
    return (step - self.start) * self.images_per_step / max(elapsed, 1e-9)

  def line(self, step: int) -> str:
    done = step / max(self.total, 1)
    filled = int(self.width * done)
    rate = self.rate(step)
    remaining = (self.total - step) * self.images_per_step / max(rate, 1e-9)
    return (f'[{"#" * filled}{"." * (self.width - filled)}] {step}/{self.total}'
            f' {rate:.1f} img/s ETA {_format_seconds(remaining)}')

  def update(self, step: int) -> None:
    if self._interactive:
      self.stream.write('\r' + self.line(step))
      self.stream.flush()

  def close(self) -> None:
    if self._interactive:
      self.stream.write('\n')
      self.stream.flush()


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  return f'{hours}:{rest // 60:02d}:{rest % 60:02d}'
