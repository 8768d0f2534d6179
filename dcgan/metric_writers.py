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
    _drop_partial_last_line(workdir / 'metrics.jsonl')
    self._jsonl = open(workdir / 'metrics.jsonl', 'a', encoding='utf-8')
    self._tb = tensorboardX.SummaryWriter(str(workdir / 'tensorboard'))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    record = {'step': int(step), 'time': time.time()}
    record.update({k: float(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for key, value in scalars.items():
      self._tb.add_scalar(key, float(value), int(step))

  def write_event(self, step: int, event: str, **fields) -> None:
    """Appends {'step', 'time', 'event', **fields} to metrics.jsonl only.

    Events (a rollback, a damaged checkpoint, a resume) are told apart from
    scalar records by their 'event' key.
    """
    record = {'step': int(step), 'time': time.time(), 'event': event}
    record.update(fields)
    self._jsonl.write(json.dumps(record, default=str) + '\n')
    self._jsonl.flush()

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    """`image`: uint8 (H, W, 3)."""
    self._tb.add_image(name, image, int(step), dataformats='HWC')

  def flush(self) -> None:
    self._jsonl.flush()
    self._tb.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._tb.close()


def _drop_partial_last_line(path: epath.Path) -> None:
  """Cuts a last line left unfinished by a killed process.

  Appending after it would glue two records into one unreadable line.
  """
  if not path.exists():
    return
  with open(path, 'rb+') as f:
    size = f.seek(0, 2)
    if size == 0:
      return
    f.seek(size - 1)
    if f.read(1) == b'\n':
      return
    keep, block = 0, 1 << 16
    for end in range(size, 0, -block):  # the last newline, from the end
      start = max(0, end - block)
      f.seek(start)
      at = f.read(end - start).rfind(b'\n')
      if at >= 0:
        keep = start + at + 1
        break
    f.truncate(keep)


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
