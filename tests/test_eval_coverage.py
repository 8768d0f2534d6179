"""Tests for dcgan.eval.coverage on constructed label sets."""

import itertools
import math

import numpy as np
import pytest

from dcgan.eval import coverage


def _uniform(num_classes, repeats=1):
  """Every combination of the classes, `repeats` times: (prod * repeats, A)."""
  rows = list(itertools.product(*[range(k) for k in num_classes]))
  return np.asarray(rows * repeats, np.int64)


def test_collapsed_generator_covers_one_mode_in_n():
  num_classes = [10]
  reference = _uniform(num_classes, repeats=50)
  samples = np.full((1000, 1), 3)
  report = coverage.coverage_report(samples, reference, ['hair_color'],
                                    num_classes)
  assert report['coverage/hair_color'] == pytest.approx(1 / 10)
  assert report['joint_coverage'] == pytest.approx(1 / 10)
  assert report['joint_covered_mass'] == pytest.approx(1 / 10)
  assert report['distinct_fraction'] == pytest.approx(1 / 1000)
  # Smoothed KL(P || Q): P uniform; Q has 1000.5 / 1005 on class 3 and
  # 0.5 / 1005 elsewhere.
  q_hit, q_miss = 1000.5 / 1005, 0.5 / 1005
  expected = 0.1 * math.log(0.1 / q_hit) + 0.9 * math.log(0.1 / q_miss)
  assert report['kl/hair_color'] == pytest.approx(expected, rel=1e-3)


def test_uniform_samples_cover_everything():
  num_classes = [4, 5, 6]
  names = ['a', 'b', 'c']
  reference = _uniform(num_classes, repeats=3)
  samples = _uniform(num_classes)
  report = coverage.coverage_report(samples, reference, names, num_classes,
                                    subset=['a', 'c'])
  for name in names:
    assert report[f'coverage/{name}'] == 1.0
    assert report[f'kl/{name}'] == pytest.approx(0.0, abs=1e-12)
  assert report['coverage_mean'] == 1.0
  assert report['pair_coverage'] == 1.0
  assert report['joint_coverage'] == 1.0
  assert report['joint_covered_mass'] == 1.0
  assert report['joint_size'] == 24
  assert report['joint_kl'] == pytest.approx(0.0, abs=1e-12)
  assert report['distinct_fraction'] == 1.0
  assert report['num_samples'] == 120


def test_kl_of_identical_distributions_is_zero():
  counts = np.array([5, 0, 17, 3])
  assert coverage.kl_divergence(counts, counts) == 0.0
  assert coverage.kl_divergence(counts, counts, smoothing=0.0) == 0.0
  assert coverage.kl_divergence(counts, counts + 1) > 0.0


def test_kl_matches_hand_computation_and_direction():
  # P = (3/4, 1/4) and Q = (1/4, 3/4) without smoothing.
  expected = 0.75 * math.log(3) + 0.25 * math.log(1 / 3)
  assert coverage.kl_divergence([3, 1], [1, 3], 0.0) == pytest.approx(expected)
  # A class P has and Q lacks: infinite without smoothing, finite with it.
  assert coverage.kl_divergence([1, 1], [2, 0], 0.0) == math.inf
  assert math.isfinite(coverage.kl_divergence([1, 1], [2, 0]))
  # Classes Q has and P lacks cost nothing but the mass moved.
  assert coverage.kl_divergence([2, 0], [1, 1], 0.0) == pytest.approx(
      math.log(2))


def test_pairs_see_collapse_that_marginals_miss():
  # Each attribute alone is covered, but only 2 of the 4 pairs occur:
  # e.g. every blue-haired sample has blue eyes.
  reference = _uniform([2, 2], repeats=10)
  samples = np.array([[0, 0], [1, 1]] * 50)
  report = coverage.coverage_report(samples, reference, ['hair', 'eyes'],
                                    [2, 2])
  assert report['coverage_mean'] == 1.0
  assert report['kl_mean'] == pytest.approx(0.0, abs=1e-12)
  assert report['pair_coverage'] == 0.5
  assert report['joint_coverage'] == 0.5
  assert report['distinct_fraction'] == pytest.approx(2 / 100)


def test_coverage_counts_only_modes_of_the_reference():
  # Class 2 never occurs in the data: producing it or not changes nothing,
  # and a rare class missed costs little covered mass.
  assert coverage.class_coverage([5, 5, 0], [10, 10, 0]) == 1.0
  assert coverage.class_coverage([5, 5, 9], [10, 10, 0]) == 1.0
  assert coverage.class_coverage([5, 0, 0], [99, 1, 0]) == 0.5
  assert coverage.covered_mass([5, 0, 0], [99, 1, 0]) == pytest.approx(0.99)
  with pytest.raises(ValueError, match='no mode'):
    coverage.class_coverage([1, 2], [0, 0])


def test_joint_index_is_row_major():
  labels = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [2, 3, 4]])
  np.testing.assert_array_equal(
      coverage.joint_index(labels, [3, 4, 5]), [0, 1, 5, 20, 59])


def test_real_floor_of_iid_draws_is_near_perfect():
  rng = np.random.default_rng(0)
  num_classes = [4, 5, 10]
  reference = np.stack([rng.integers(k, size=30_000) for k in num_classes], 1)
  floor = coverage.real_floor(reference, ['a', 'b', 'c'], num_classes,
                              num_samples=10_000)
  assert floor['num_samples'] == 10_000
  assert floor['coverage_mean'] == 1.0
  assert floor['joint_coverage'] == 1.0  # 200 cells, ~50 draws each
  assert 0 < floor['kl_mean'] < 1e-3
  assert 0 < floor['joint_kl'] < 0.02
  # 200 combinations for 10k draws: many repeats.
  assert floor['distinct_fraction'] == pytest.approx(200 / 10_000)
  collapsed = coverage.coverage_report(
      np.repeat(reference[:1], 10_000, 0), reference, ['a', 'b', 'c'],
      num_classes)
  assert collapsed['kl_mean'] > 100 * floor['kl_mean']
  with pytest.raises(ValueError, match='num_samples'):
    coverage.real_floor(reference, ['a', 'b', 'c'], num_classes, 30_000)


@pytest.mark.parametrize('samples, match', [
    (np.zeros((5, 3), np.int64), r'\(N, 2\)'),
    (np.zeros((5, 2), np.float32), 'integers'),
    (np.array([[0, 2]]), 'outside'),
    (np.array([[-1, 0]]), 'outside'),
    (np.zeros((0, 2), np.int64), 'empty'),
])
def test_bad_labels_are_rejected(samples, match):
  reference = _uniform([2, 2])
  with pytest.raises(ValueError, match=match):
    coverage.coverage_report(samples, reference, ['a', 'b'], [2, 2])


def test_bad_subset_and_attribute_count_are_rejected():
  reference = _uniform([2, 2])
  with pytest.raises(ValueError, match='subset'):
    coverage.coverage_report(reference, reference, ['a', 'b'], [2, 2],
                             subset=['c'])
  with pytest.raises(ValueError, match='2 attributes but 3'):
    coverage.coverage_report(reference, reference, ['a', 'b'], [2, 2, 2])
