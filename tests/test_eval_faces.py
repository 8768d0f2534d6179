"""Tests for dcgan.eval.faces: the anime-face cascade's detection rate."""

import io
import pathlib
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from dcgan.data import pipeline
from dcgan.eval import faces

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / 'shared'
CASCADE = SHARED / 'datasets' / 'lbpcascade_animeface.xml'
FACES_ZIP = SHARED / 'datasets' / 'anime-faces-96' / 'faces.zip'

needs_cascade = pytest.mark.skipif(
    not CASCADE.exists(),
    reason=f'{CASCADE} is absent (the shared datasets folder is not here)')
needs_faces = pytest.mark.skipif(
    not (CASCADE.exists() and FACES_ZIP.exists()),
    reason=f'{FACES_ZIP} or {CASCADE} is absent (no shared datasets folder)')


@needs_cascade
def test_noise_has_no_face():
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, (200, 48, 48, 3), dtype=np.uint8)
  flat = np.full((4, 48, 48, 3), 128, np.uint8)
  result = faces.detection_rate(np.concatenate([noise, flat]), str(CASCADE))
  assert result == {'face_detection_rate': 0.0, 'num_images': 204}


@needs_faces
def test_real_faces_at_48_pixels_are_found():
  # The training pipeline's view of faces 0..199: 96x96 -> 48x48 bilinear.
  with zipfile.ZipFile(FACES_ZIP) as archive:
    images = []
    for i in range(200):
      with Image.open(io.BytesIO(archive.read(f'faces/{i}.jpg'))) as image:
        images.append(pipeline.to_model_image(image.convert('RGB'), 48))
  images = np.clip(np.round((np.stack(images) + 1) * 127.5), 0, 255)
  found = faces.detect_faces(images.astype(np.uint8),
                             faces.load_cascade(str(CASCADE)))
  assert found.shape == (200,) and found.dtype == bool
  # The documented protocol finds all 400 of the README's check; allow 1%.
  assert found.mean() >= 0.99


@needs_cascade
def test_detector_input_is_enlarged_with_a_border():
  image = np.zeros((48, 48, 3), np.uint8)
  image[:, 24:] = 255  # left half black, right half white
  gray = faces.detector_input(image)
  assert gray.shape == (192, 192) and gray.dtype == np.uint8
  # The replicated border continues each half outwards.
  assert gray[:, :32].max() == gray[:, :32].min() < gray[:, -32:].min()


def test_missing_cascade_file_names_it(tmp_path):
  missing = tmp_path / 'nope.xml'
  with pytest.raises(FileNotFoundError, match='nope.xml.*does not exist'):
    faces.detection_rate(np.zeros((1, 48, 48, 3), np.uint8), str(missing))


def test_unreadable_cascade_file_is_rejected(tmp_path):
  bad = tmp_path / 'bad.xml'
  bad.write_text('<?xml version="1.0"?><opencv_storage></opencv_storage>')
  with pytest.raises(ValueError, match='could not load'):
    faces.load_cascade(str(bad))


def test_missing_opencv_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, 'cv2', None)  # what `import cv2` fails on
  with pytest.raises(ImportError, match=r"pip install -e '\.\[eval\]'"):
    faces.load_cascade(str(tmp_path / 'any.xml'))


@pytest.mark.parametrize('images, match', [
    (np.zeros((2, 48, 48, 3), np.float32), 'uint8.*to_uint8'),
    (np.zeros((48, 48, 3), np.uint8), r'\(N, H, W, 3\)'),
    (np.zeros((2, 48, 48, 1), np.uint8), r'\(N, H, W, 3\)'),
    (np.zeros((0, 48, 48, 3), np.uint8), 'empty'),
])
def test_bad_images_are_rejected(images, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    faces.detection_rate(images, str(tmp_path / 'unused.xml'))
