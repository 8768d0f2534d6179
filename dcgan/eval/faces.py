"""Anime-face detection rate: how many samples an OpenCV face cascade accepts.

The detector is nagadomi's LBP anime-face cascade
(`lbpcascade_animeface.xml`), a file the user supplies. It was trained on
faces much larger than 48x48, so each image is first enlarged:

1. resized to 128x128 with bilinear interpolation (`cv2.INTER_LINEAR`);
2. padded with a 32-pixel (25% of 128) replicated border on every side, to
   192x192, because the cascade needs some context around a face that fills
   its image;
3. converted to gray and histogram-equalised, as in the cascade's own example;
4. searched with `detectMultiScale` at OpenCV's defaults (scale factor 1.1,
   3 neighbours, no minimum size).

An image counts as a face when at least one box is found. With this protocol
real 96x96 faces resized to 48x48 score 100% (400 of 400) and uniform noise
0%. Needs the `eval` extra: `pip install -e '.[eval]'` (OpenCV below 5, whose
version 5 dropped `CascadeClassifier`).
"""

import os
from typing import Any

import numpy as np

UPSCALED_SIZE = 128
BORDER_FRACTION = 0.25
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 3

_INSTALL_HINT = ("install the evaluation extra: pip install -e '.[eval]' "
                 '(opencv-python-headless<5)')


def _import_cv2():
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f'Face detection needs OpenCV, which is not installed: {_INSTALL_HINT}.'
    ) from e
  if not hasattr(cv2, 'CascadeClassifier'):
    raise ImportError(
        f'OpenCV {cv2.__version__} has no CascadeClassifier (dropped in '
        f'OpenCV 5): {_INSTALL_HINT}.')
  return cv2


def load_cascade(path: str) -> Any:
  """Loads a cascade XML as a `cv2.CascadeClassifier`.

  Args:
    path: the cascade file, e.g. '../shared/datasets/lbpcascade_animeface.xml'.

  Raises:
    ImportError: OpenCV (below 5) is not installed.
    FileNotFoundError: `path` does not exist.
    ValueError: OpenCV cannot read `path` as a cascade.
  """
  cv2 = _import_cv2()
  full = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(full):
    raise FileNotFoundError(
        f'Face cascade {path!r} does not exist (resolved to {full!r}); pass '
        'the path of lbpcascade_animeface.xml (nagadomi/lbpcascade_animeface).')
  cascade = cv2.CascadeClassifier(full)
  if cascade.empty():
    raise ValueError(f'OpenCV could not load {path!r} as a cascade classifier '
                     '(is it the XML of an OpenCV cascade?).')
  return cascade


def _check_images(images) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
        f'images must be RGB NHWC (N, H, W, 3), got shape {images.shape}.')
  if images.dtype != np.uint8:
    raise ValueError(
        f'images must be uint8 pixels, got {images.dtype}; convert generator '
        'outputs in [-1, 1] with dcgan.sampling.to_uint8.')
  return images


def detector_input(image: np.ndarray) -> np.ndarray:
  """One uint8 RGB image (H, W, 3) -> the gray 192x192 image searched."""
  cv2 = _import_cv2()
  image = cv2.resize(image, (UPSCALED_SIZE, UPSCALED_SIZE),
                     interpolation=cv2.INTER_LINEAR)
  border = round(BORDER_FRACTION * UPSCALED_SIZE)
  image = cv2.copyMakeBorder(image, border, border, border, border,
                             cv2.BORDER_REPLICATE)
  return cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))


def detect_faces(images, cascade) -> np.ndarray:
  """Which images hold a face by the module's protocol.

  Args:
    images: uint8 RGB (N, H, W, 3), any square-ish size (48x48 samples).
    cascade: from `load_cascade`.

  Returns:
    bool (N,).
  """
  images = _check_images(images)
  found = np.zeros(len(images), bool)
  for i, image in enumerate(images):
    boxes = cascade.detectMultiScale(
        detector_input(np.ascontiguousarray(image)),
        scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS)
    found[i] = len(boxes) > 0
  return found


def detection_rate(images, cascade_path: str) -> dict[str, float]:
  """Fraction of images in which the cascade finds a face.

  Args:
    images: uint8 RGB (N, H, W, 3), N >= 1.
    cascade_path: the cascade XML (see `load_cascade`).

  Returns:
    {'face_detection_rate': fraction in [0, 1], 'num_images': N}.
  """
  images = _check_images(images)
  if not len(images):
    raise ValueError('images is empty: no detection rate of 0 images.')
  found = detect_faces(images, load_cascade(cascade_path))
  return {'face_detection_rate': float(found.mean()),
          'num_images': len(images)}
