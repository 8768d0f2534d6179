"""Grids, strips, captions, PNG and GIF files."""

import numpy as np
import pytest
from PIL import Image

from dcgan import images


def _tiles(num, size=4):
  """uint8 (num, size, size, 3): tile i is filled with the value i + 1."""
  return np.stack([np.full((size, size, 3), i + 1, np.uint8)
                   for i in range(num)])


def test_make_grid_places_tiles_row_by_row():
  grid = images.make_grid(_tiles(5), num_cols=3, padding=1)
  assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
  assert grid[1, 1, 0] == 1 and grid[1, 6, 0] == 2 and grid[6, 6, 0] == 5
  assert grid[6, 11, 0] == 255  # no sixth tile: padding colour
  assert images.make_grid(_tiles(9)).shape == (3 * 6 + 2,) * 2 + (3,)
  with pytest.raises(ValueError, match='uint8 images'):
    images.make_grid(np.zeros((2, 4, 4, 3), np.float32))


def test_save_png_round_trips_and_overwrites(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), np.uint8)
  path = images.save_png(image, tmp_path / 'a' / 'x.png')
  np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
  images.save_png(255 - image, path)  # a second write replaces the file
  np.testing.assert_array_equal(np.asarray(Image.open(path)), 255 - image)
  assert sorted(p.name for p in path.parent.iterdir()) == ['x.png']


def test_concat_pads_smaller_images():
  a = np.zeros((4, 3, 3), np.uint8)
  b = np.zeros((6, 2, 3), np.uint8)
  side = images.concat([a, b], axis=1, padding=1)
  assert side.shape == (6, 3 + 1 + 2, 3)
  assert side[5, 0, 0] == 255 and side[5, 4, 0] == 0
  stacked = images.concat([a, b], axis=0, padding=2)
  assert stacked.shape == (4 + 2 + 6, 3, 3)
  with pytest.raises(ValueError, match='axis 0 or 1'):
    images.concat([a], axis=2)


def test_add_caption_writes_text_above():
  image = np.full((10, 80, 3), 7, np.uint8)
  captioned = images.add_caption(image, 'step 100', size=12)
  assert captioned.shape == (10 + 18, 80, 3)
  np.testing.assert_array_equal(captioned[18:], image)
  band = captioned[:18]
  assert band.min() < 128 and band.max() == 255  # dark text on white


def test_upscale_repeats_pixels():
  image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
  big = images.upscale(image, 3)
  assert big.shape == (6, 6, 3)
  np.testing.assert_array_equal(big[::3, ::3], image)
  np.testing.assert_array_equal(big[2, 2], image[0, 0])


def test_save_gif_writes_every_frame(tmp_path):
  frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 120, 250)]
  path = images.save_gif(frames, tmp_path / 'a.gif', frame_ms=100,
                         last_frame_ms=900)
  with Image.open(path) as gif:
    assert gif.n_frames == 3
    durations, values = [], []
    for i in range(gif.n_frames):
      gif.seek(i)
      durations.append(gif.info['duration'])
      values.append(int(np.asarray(gif.convert('RGB'))[0, 0, 0]))
  assert durations == [100, 100, 900]
  assert values == [0, 120, 250]
  with pytest.raises(ValueError, match='share one shape'):
    images.save_gif([frames[0], np.zeros((4, 4, 3), np.uint8)],
                    tmp_path / 'b.gif')
