"""Image arrays to grids and PNG files."""

import math

import numpy as np
from etils import epath
from PIL import Image


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
  # Write then rename, so a reader never sees half a file.
  tmp = path.with_name(path.name + '.tmp')
  with tmp.open('wb') as f:
    Image.fromarray(np.asarray(image, np.uint8)).save(f, format='PNG')
  tmp.rename(path)
  return path
