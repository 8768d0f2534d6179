"""Tests of dcgan.eval.metrics: FID, KID, precision/recall on features."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.spatial

from dcgan.eval import metrics

METHODS = ('sqrtm', 'eigh')


def _random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
  q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
  return q * np.sign(np.diag(r))


# ---------------------------------------------------------------- Frechet


@pytest.mark.parametrize('method', METHODS)
def test_frechet_distance_of_diagonal_gaussians_is_closed_form(method):
  rng = np.random.default_rng(0)
  dim = 32
  mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
  var1, var2 = rng.uniform(0.1, 3, dim), rng.uniform(0.1, 3, dim)
  # For commuting covariances Tr((S1 S2)^(1/2)) = sum sqrt(a_i b_i).
  expected = (np.sum((mu1 - mu2)**2) +
              np.sum((np.sqrt(var1) - np.sqrt(var2))**2))
  got = metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2),
                                 method=method)
  assert got == pytest.approx(expected, rel=1e-10)
  # Rotating both Gaussians alike (non-diagonal, still commuting) keeps it.
  q = _random_rotation(dim, rng)
  rotated = metrics.frechet_distance(
      q @ mu1, q @ np.diag(var1) @ q.T, q @ mu2, q @ np.diag(var2) @ q.T,
      method=method)
  assert rotated == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_methods_agree_on_general_covariances():
  rng = np.random.default_rng(1)
  dim = 64
  a, b = rng.normal(size=(2, 200, dim))
  s1, s2 = np.cov(a @ rng.normal(size=(dim, dim)), rowvar=False), np.cov(
      b, rowvar=False)
  mu1, mu2 = rng.normal(size=(2, dim))
  by_sqrtm = metrics.frechet_distance(mu1, s1, mu2, s2, method='sqrtm')
  by_eigh = metrics.frechet_distance(mu1, s1, mu2, s2, method='eigh')
  # The textbook formula, written out with scipy.
  product_root = scipy.linalg.sqrtm(s1 @ s2).real
  textbook = (np.sum((mu1 - mu2)**2) +
              np.trace(s1 + s2 - 2 * product_root))
  assert by_sqrtm == pytest.approx(textbook, rel=1e-10)
  assert by_eigh == pytest.approx(textbook, rel=1e-9)


def test_frechet_distance_is_symmetric_and_zero_for_one_gaussian():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(100, 16))
  y = rng.normal(size=(100, 16)) * 2 + 1
  mu1, s1 = metrics.gaussian_statistics(x)
  mu2, s2 = metrics.gaussian_statistics(y)
  for method in METHODS:
    assert metrics.frechet_distance(mu1, s1, mu1, s1,
                                    method=method) == pytest.approx(0,
                                                                    abs=1e-9)
    assert metrics.frechet_distance(mu1, s1, mu2, s2, method=method) == (
        pytest.approx(metrics.frechet_distance(mu2, s2, mu1, s1,
                                               method=method), rel=1e-9))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(500, 32))
  assert abs(metrics.fid(x, x)) < 1e-8
  # A mean shift of s in every dimension adds D s^2.
  assert metrics.fid(x, x + 0.5) == pytest.approx(32 * 0.25, rel=1e-9)


def test_fid_with_fewer_samples_than_dimensions_is_finite():
  # Singular covariances, as with a small evaluation set: sqrtm falls back
  # to the offset; both methods stay finite and close.
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(2, 20, 64))
  by_sqrtm, by_eigh = (metrics.fid(x, y + 0.3, method=m) for m in METHODS)
  assert np.isfinite(by_sqrtm) and by_sqrtm > 0
  assert by_eigh == pytest.approx(by_sqrtm, rel=1e-3)


def test_fid_rejects_bad_input():
  x = np.zeros((10, 4))
  with pytest.raises(ValueError, match='feature sizes differ: 4 and 5'):
    metrics.fid(x, np.zeros((10, 5)))
  with pytest.raises(ValueError, match=r'features_a must be \(N, D\)'):
    metrics.fid(np.zeros(4), x)
  with pytest.raises(ValueError, match='NaN or infinite'):
    metrics.fid(np.full((10, 4), np.nan), x)
  with pytest.raises(ValueError, match="method must be 'sqrtm' or 'eigh'"):
    metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2),
                             method='svd')
  with pytest.raises(ValueError, match=r'sigma2 has shape \(3, 3\)'):
    metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# ---------------------------------------------------------------------- KID


def test_kid_matches_the_formula_on_one_full_subset():
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(2, 30, 8))
  mean, _ = metrics.kid(x, y, num_subsets=1, subset_size=30)
  # With m = N the subset is a permutation of the set: the plain formula.
  k = lambda a, b: (a @ b.T / 8 + 1)**3
  m = 30
  expected = ((k(x, x).sum() - np.trace(k(x, x)) + k(y, y).sum() -
               np.trace(k(y, y))) / (m * (m - 1)) - 2 * k(x, y).mean())
  assert mean == pytest.approx(expected, rel=1e-10)


def test_kid_is_unbiased_on_equal_distributions():
  # Many independent pairs of samples from one distribution: the estimates
  # average to 0 within their standard error (a biased V-statistic would
  # sit well above it).
  rng = np.random.default_rng(6)
  means = []
  for _ in range(40):
    x, y = rng.normal(size=(2, 60, 16))
    mean, std_err = metrics.kid(x, y, num_subsets=5, subset_size=50,
                                seed=int(rng.integers(1 << 30)))
    assert std_err > 0
    means.append(mean)
  means = np.array(means)
  assert abs(means.mean()) < 3 * means.std(ddof=1) / np.sqrt(len(means))
  # Within one pair, small subsets: the mean over subsets is near 0 within
  # its own standard error.
  x, y = rng.normal(size=(2, 2000, 16))
  mean, std_err = metrics.kid(x, y, num_subsets=100, subset_size=100)
  assert abs(mean) < 3 * std_err


def test_kid_is_positive_for_different_distributions_and_seeded():
  rng = np.random.default_rng(7)
  x = rng.normal(size=(300, 16))
  y = rng.normal(size=(300, 16)) + 0.5
  mean, std_err = metrics.kid(x, y, num_subsets=20, subset_size=100, seed=3)
  assert mean > 10 * std_err > 0
  assert metrics.kid(x, y, 20, 100, seed=3) == (mean, std_err)
  assert metrics.kid(x, y, 20, 100, seed=4) != (mean, std_err)


def test_kid_rejects_bad_settings():
  x = np.zeros((10, 4))
  with pytest.raises(ValueError, match='num_subsets >= 1'):
    metrics.kid(x, x, num_subsets=0)


# ----------------------------------------------------- precision and recall


def _brute_force_precision_recall(real, fake, k):
  """The paper's definition, written directly with full distance matrices."""
  d_rr = scipy.spatial.distance.cdist(real, real)
  d_ff = scipy.spatial.distance.cdist(fake, fake)
  d_rf = scipy.spatial.distance.cdist(real, fake)
  real_radius = np.sort(d_rr, axis=1)[:, k]
  fake_radius = np.sort(d_ff, axis=1)[:, k]
  precision = np.mean([(d_rf[:, j] <= real_radius).any()
                       for j in range(len(fake))])
  recall = np.mean([(d_rf[i, :] <= fake_radius).any()
                    for i in range(len(real))])
  return precision, recall


def test_precision_recall_of_identical_sets_is_one():
  x = np.random.default_rng(8).normal(size=(200, 16))
  assert metrics.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_of_far_clusters_is_zero():
  rng = np.random.default_rng(9)
  real = rng.normal(size=(100, 16))
  fake = rng.normal(size=(120, 16)) + 100
  assert metrics.precision_recall(real, fake) == (0.0, 0.0)


def test_precision_recall_when_half_the_samples_are_off_manifold():
  rng = np.random.default_rng(10)
  real = rng.normal(size=(100, 8))
  fake = np.concatenate([real[:50], rng.normal(size=(50, 8)) + 100])
  precision, recall = metrics.precision_recall(real, fake)
  assert precision == 0.5
  assert 0.5 <= recall < 1.0  # the fake half covers only part of real's


def test_precision_recall_match_the_definition(monkeypatch):
  # Blocks smaller than the sets exercise the blocked loops.
  monkeypatch.setattr(metrics, '_ROWS_PER_BLOCK', 64)
  rng = np.random.default_rng(11)
  real = rng.normal(size=(300, 10))
  fake = rng.normal(size=(250, 10)) * 1.3 + 0.4
  for k in (1, 3, 5):
    got = metrics.precision_recall(real, fake, k=k)
    expected = _brute_force_precision_recall(real, fake, k)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got[0] < 1 and 0 < got[1] < 1


def test_precision_recall_rejects_bad_k():
  x = np.zeros((5, 3))
  with pytest.raises(ValueError, match='k must be from 1 to'):
    metrics.precision_recall(x, x, k=5)


def test_metrics_module_does_not_import_torch():
  code = ('import sys, dcgan.eval.metrics; '
          "print('torch' in sys.modules)")
  out = subprocess.run([sys.executable, '-c', code], check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == 'False'
