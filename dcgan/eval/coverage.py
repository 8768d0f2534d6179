"""Mode coverage and attribute-distribution distances, from class labels.

Pure numpy. Each image (a sample or a real image) is described by one class
index per attribute, as an int array `labels` of shape (N, A) with
`labels[:, a]` in [0, num_classes[a]). The reference is the data the
generator was trained on, described the same way (by the same classifier:
its errors then affect both sides alike).

Definitions (what `coverage_report` returns)
--------------------------------------------
* `coverage/<attr>`: of the classes of one attribute that occur in the
  reference, the fraction that occur at least once in the samples.
* `kl/<attr>`: KL(P || Q) in nats, P the reference's and Q the samples'
  distribution of one attribute, both with additive smoothing: p_k =
  (n_k + alpha) / (N + alpha * K), alpha = `smoothing` (0.5, the
  Krichevsky-Trofimov estimate). The direction charges samples for the data's
  classes that they miss (a collapsed generator: large) rather than for the
  rare classes that they over-produce. Smoothing keeps it finite when the
  samples miss a class. Same counts on both sides give exactly 0.
  `kl_mean` is the mean over attributes.
* `pair_coverage`: for each pair of attributes, the fraction of the pair's
  class combinations occurring in the reference that occur in the samples;
  averaged over all pairs (0 pairs with one attribute: then the attribute's
  coverage). Pairs stay meaningful with 10k samples where the full joint
  space of many attributes (e.g. 2.3M combinations) does not.
* `joint_coverage`, `joint_covered_mass`, `joint_kl`: over the joint classes
  of `subset` (a few attributes, e.g. hair colour x eye colour x skin tone,
  400 combinations): the fraction of the reference's combinations hit by
  the samples, the reference probability of the hit combinations (a rare
  combination that no sample hits costs little), and the smoothed KL(P || Q)
  as above over the combinations.
* `distinct_fraction`: distinct full label tuples among the samples over the
  number of samples. When the joint space is much larger than N (the
  procedural avatars), independent draws from the data are almost all
  distinct; a generator repeating a few modes is not.

A perfect generator does not score 1 and 0 with finitely many samples: the
same numbers for N real images held out from the reference (`real_floor`
runs them) are the floor to compare a generator's with. A generator stuck in
one combination scores coverage 1/K on an attribute with K classes.
"""

import itertools
from collections.abc import Sequence

import numpy as np

DEFAULT_SMOOTHING = 0.5


def _check_labels(labels, num_classes: Sequence[int], name: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim == 1 and len(num_classes) == 1:
    labels = labels[:, None]
  if labels.ndim != 2 or labels.shape[1] != len(num_classes):
    raise ValueError(f'{name} must be (N, {len(num_classes)}) class indices, '
                     f'one column per attribute; got shape {labels.shape}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'{name} must hold integers, got {labels.dtype}.')
  if len(labels) == 0:
    raise ValueError(f'{name} is empty.')
  high = np.asarray(num_classes)
  if (labels < 0).any() or (labels >= high).any():
    raise ValueError(f'{name} has class indices outside [0, num_classes) for '
                     f'num_classes = {tuple(num_classes)}.')
  return labels.astype(np.int64)


def histogram(labels, num_classes: int) -> np.ndarray:
  """Counts of each class: int array (num_classes,) from labels (N,)."""
  return np.bincount(np.asarray(labels).reshape(-1), minlength=num_classes)


def joint_index(labels, num_classes: Sequence[int]) -> np.ndarray:
  """Row-major index of each row's class combination: (N, A) -> (N,)."""
  labels = np.asarray(labels)
  return np.ravel_multi_index(tuple(labels.T), tuple(num_classes))


def class_coverage(sample_counts, reference_counts) -> float:
  """Fraction of the reference's occurring classes that the samples hit.

  Args:
    sample_counts: counts per class (K,) of the samples.
    reference_counts: counts per class (K,) of the reference; classes with
      count 0 are not modes and do not count.

  Returns:
    A float in [0, 1].
  """
  sample_counts = np.asarray(sample_counts)
  support = np.asarray(reference_counts) > 0
  if not support.any():
    raise ValueError('reference_counts is all zeros: no mode to cover.')
  return float(np.mean(sample_counts[support] > 0))


def covered_mass(sample_counts, reference_counts) -> float:
  """Reference probability of the classes the samples hit, in [0, 1]."""
  reference_counts = np.asarray(reference_counts, np.float64)
  hit = np.asarray(sample_counts) > 0
  return float(reference_counts[hit].sum() / reference_counts.sum())


def smoothed_distribution(counts, smoothing: float = DEFAULT_SMOOTHING
                          ) -> np.ndarray:
  """(n_k + smoothing) / (N + smoothing * K) for counts (K,)."""
  counts = np.asarray(counts, np.float64)
  if smoothing < 0:
    raise ValueError(f'smoothing must be >= 0, got {smoothing}.')
  total = counts.sum() + smoothing * counts.size
  if total <= 0:
    raise ValueError('counts are all zero and smoothing is 0: no distribution.')
  return (counts + smoothing) / total


def kl_divergence(p_counts, q_counts,
                  smoothing: float = DEFAULT_SMOOTHING) -> float:
  """KL(P || Q) in nats between two smoothed count vectors (K,).

  Terms with p_k = 0 are 0; with smoothing 0 a class that P has and Q lacks
  gives inf.
  """
  p = smoothed_distribution(p_counts, smoothing)
  q = smoothed_distribution(q_counts, smoothing)
  if p.shape != q.shape:
    raise ValueError(f'count vectors differ in length: {p.shape} vs {q.shape}')
  mask = p > 0
  with np.errstate(divide='ignore'):
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def coverage_report(sample_labels, reference_labels, attributes: Sequence[str],
                    num_classes: Sequence[int],
                    subset: Sequence[str] | None = None,
                    smoothing: float = DEFAULT_SMOOTHING) -> dict[str, float]:
  """Coverage and KL of samples against a reference (see module doc).

  Args:
    sample_labels: int (N, A), one column per attribute.
    reference_labels: int (M, A), same columns.
    attributes: the A attribute names, in column order.
    num_classes: the A class counts.
    subset: attribute names for the joint_* numbers; None means all of them.
    smoothing: additive smoothing of the KL divergences.

  Returns:
    {'num_samples', 'coverage/<attr>', 'kl/<attr>', 'coverage_mean',
    'kl_mean', 'pair_coverage', 'joint_coverage', 'joint_covered_mass',
    'joint_kl', 'joint_size', 'distinct_fraction'}: floats ('num_samples'
    and 'joint_size', the number of joint combinations, are ints).
  """
  attributes, num_classes = list(attributes), [int(k) for k in num_classes]
  if len(attributes) != len(num_classes):
    raise ValueError(f'{len(attributes)} attributes but {len(num_classes)} '
                     'class counts.')
  samples = _check_labels(sample_labels, num_classes, 'sample_labels')
  reference = _check_labels(reference_labels, num_classes, 'reference_labels')
  subset = list(attributes if subset is None else subset)
  unknown = [name for name in subset if name not in attributes]
  if unknown or not subset:
    raise ValueError(f'subset {subset!r} must name some of {attributes}.')

  report = {'num_samples': len(samples)}
  for a, name in enumerate(attributes):
    s = histogram(samples[:, a], num_classes[a])
    r = histogram(reference[:, a], num_classes[a])
    report[f'coverage/{name}'] = class_coverage(s, r)
    report[f'kl/{name}'] = kl_divergence(r, s, smoothing)
  report['coverage_mean'] = float(np.mean(
      [report[f'coverage/{name}'] for name in attributes]))
  report['kl_mean'] = float(np.mean(
      [report[f'kl/{name}'] for name in attributes]))

  pairs = []
  for a, b in itertools.combinations(range(len(attributes)), 2):
    size = num_classes[a] * num_classes[b]
    pair = [num_classes[a], num_classes[b]]
    pairs.append(class_coverage(
        np.bincount(joint_index(samples[:, [a, b]], pair), minlength=size),
        np.bincount(joint_index(reference[:, [a, b]], pair), minlength=size)))
  report['pair_coverage'] = (float(np.mean(pairs)) if pairs
                             else report['coverage_mean'])

  columns = [attributes.index(name) for name in subset]
  sizes = [num_classes[c] for c in columns]
  size = int(np.prod(sizes))
  s = np.bincount(joint_index(samples[:, columns], sizes), minlength=size)
  r = np.bincount(joint_index(reference[:, columns], sizes), minlength=size)
  report['joint_size'] = size
  report['joint_coverage'] = class_coverage(s, r)
  report['joint_covered_mass'] = covered_mass(s, r)
  report['joint_kl'] = kl_divergence(r, s, smoothing)

  report['distinct_fraction'] = len(np.unique(samples, axis=0)) / len(samples)
  return report


def real_floor(reference_labels, attributes: Sequence[str],
               num_classes: Sequence[int], num_samples: int = 10_000,
               subset: Sequence[str] | None = None, seed: int = 0,
               smoothing: float = DEFAULT_SMOOTHING) -> dict[str, float]:
  """What a perfect generator scores: real images against the other reals.

  Draws `num_samples` rows of `reference_labels` without replacement and runs
  `coverage_report` on them against the remaining rows (disjoint, so the
  floor is not flattered by counting an image on both sides).

  Args:
    reference_labels: int (M, A) for M > num_samples real images.
    attributes, num_classes, subset, smoothing: as in `coverage_report`.
    num_samples: how many rows play the samples: use the generator's N.
    seed: which rows.

  Returns:
    `coverage_report`'s dict.
  """
  reference_labels = np.asarray(reference_labels)
  if not 0 < num_samples < len(reference_labels):
    raise ValueError(
        f'num_samples = {num_samples} must be in [1, {len(reference_labels)})'
        ': the floor holds out that many of the reference images.')
  order = np.random.default_rng(seed).permutation(len(reference_labels))
  held_out, rest = order[:num_samples], order[num_samples:]
  return coverage_report(reference_labels[held_out], reference_labels[rest],
                         attributes, num_classes, subset, smoothing)
