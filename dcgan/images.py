"""Image arrays to grids, captioned strips, PNG and GIF files."""

import math
from typing import Sequence

import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont


def make_grid(images: np.ndarray, num_cols: int | None = None,
              padding: int = 2, pad_value: int = 255) -> np.ndarray:
  """Tiles uint8 images (B, H, W, 3) into one (rows*H', cols*W', 3) image.

  Args:
    images: uint8 (B, H, W, 3).
    num_cols: images per row; the ceiling of sqrt(B) if None.
    padding: pixels between tiles and around the border.
    pad_value: the colour of the padding.
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f'expected uint8 images (B, H, W, 3), got '
                     f'{images.dtype} {images.shape}')
  num, height, width, _ = images.shape
  num_cols = num_cols or math.ceil(math.sqrt(num))
  num_rows = math.ceil(num / num_cols)
  grid = np.full((num_rows * (height + padding) + padding,
                  num_cols * (width + padding) + padding, 3), pad_value,
                 np.uint8)
  for i, image in enumerate(images):
    row, col = divmod(i, num_cols)
    top = padding + row * (height + padding)
    left = padding + col * (width + padding)
    grid[top:top + height, left:left + width] = image
  return grid


def save_png(image: np.ndarray, path: epath.PathLike) -> epath.Path:
  """Writes a uint8 (H, W, 3) image, creating the folder; returns the path."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Write then replace, so a reader never sees half a file (and an existing
  # file is overwritten: `rename` refuses to).
  tmp = path.with_name(path.name + '.tmp')
  with tmp.open('wb') as f:
    Image.fromarray(np.asarray(image, np.uint8)).save(f, format='PNG')
  tmp.replace(path)
  return path


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
  """Nearest-neighbour enlargement (H, W, C) -> (factor*H, factor*W, C)."""
  if factor < 1:
    raise ValueError(f'factor must be >= 1, got {factor}')
  return np.repeat(np.repeat(np.asarray(image), factor, 0), factor, 1)


def concat(images: Sequence[np.ndarray], axis: int = 1, padding: int = 2,
           pad_value: int = 255) -> np.ndarray:
  """Places uint8 (H_i, W_i, 3) images side by side (axis=1) or stacked (0).

  Smaller images are padded at the end of the other axis; `padding` pixels
  separate them.
  """
  if axis not in (0, 1) or not images:
    raise ValueError(f'need axis 0 or 1 and at least one image, got axis '
                     f'{axis} and {len(images)} images')
  other = 1 - axis
  size = max(image.shape[other] for image in images)
  parts = []
  for i, image in enumerate(images):
    image = np.asarray(image, np.uint8)
    pad = [(0, 0), (0, 0), (0, 0)]
    pad[other] = (0, size - image.shape[other])
    if i:
      pad[axis] = (padding, 0)
    parts.append(np.pad(image, pad, constant_values=pad_value))
  return np.concatenate(parts, axis=axis)


def add_caption(image: np.ndarray, text: str, size: int = 14,
                background: int = 255, color: int = 0) -> np.ndarray:
  """A band of `text` above a uint8 (H, W, 3) image, left-aligned."""
  font = ImageFont.load_default(size=size)
  band = Image.new('RGB', (image.shape[1], size + 6), (background,) * 3)
  ImageDraw.Draw(band).text((2, 2), text, fill=(color,) * 3, font=font)
  return np.concatenate([np.asarray(band), np.asarray(image, np.uint8)])


def save_gif(frames: Sequence[np.ndarray], path: epath.PathLike,
             frame_ms: int = 400, last_frame_ms: int | None = None
             ) -> epath.Path:
  """Writes uint8 (H, W, 3) frames as a looping animated GIF.

  Args:
    frames: of the same shape.
    path: the .gif file; its folder is created.
    frame_ms: how long each frame shows.
    last_frame_ms: how long the last one shows (default `frame_ms`), e.g. to
      hold the final result before the loop starts again.
  """
  if not frames:
    raise ValueError(f'no frames to write to {path}')
  shapes = {np.shape(frame) for frame in frames}
  if len(shapes) != 1:
    raise ValueError(f'GIF frames must share one shape, got {sorted(shapes)}')
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  pictures = [Image.fromarray(np.asarray(frame, np.uint8)) for frame in frames]
  durations = [frame_ms] * len(pictures)
  durations[-1] = last_frame_ms or frame_ms
  tmp = path.with_name(path.name + '.tmp')
  with tmp.open('wb') as f:
    pictures[0].save(f, format='GIF', save_all=True,
                     append_images=pictures[1:], duration=durations, loop=0)
  tmp.replace(path)
  return path
