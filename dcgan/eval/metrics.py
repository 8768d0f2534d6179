"""FID, KID and precision/recall on feature vectors (numpy and scipy only).

The features are usually Inception pool3 features (`dcgan.eval.inception`),
(N, 2048), one row per image; nothing here depends on where they come from.

* FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to
  the two sets, ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with
  the covariance's 1/(N-1) normalisation, as TTUR, pytorch-fid, clean-fid
  and fid-helper-pytorch compute it.
* KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD with
  the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
  subsets, as in their code, StyleGAN2-ADA's and clean-fid's.
* Precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the
  union of balls around its points reaching their k-th nearest neighbour;
  precision is the share of generated points inside the real manifold,
  recall the share of real points inside the generated one.
"""

import numpy as np
import scipy.linalg

SQRTM_EPS = 1e-6  # the diagonal offset of the standard FID code
# Distances are computed this many rows at a time: 1,000 x 10,000 float64
# is 80 MB.
_ROWS_PER_BLOCK = 1000


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f'{name} must be (N, D) with N >= 2, got shape '
                     f'{features.shape}.')
  if not np.isfinite(features).all():
    raise ValueError(f'{name} has NaN or infinite values.')
  return features


def _check_same_dim(a: np.ndarray, b: np.ndarray) -> None:
  if a.shape[1] != b.shape[1]:
    raise ValueError(f'feature sizes differ: {a.shape[1]} and {b.shape[1]}.')


def gaussian_statistics(features: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
  """(N, D) -> mean (D,) and covariance (D, D) (1/(N-1)), float64."""
  features = _as_features(features, 'features')
  return features.mean(0), np.cov(features, rowvar=False)


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray,
                              eps: float) -> float:
  """Tr((S1 S2)^(1/2)) by scipy's sqrtm, as TTUR's and pytorch-fid's code."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    # A singular product (e.g. fewer samples than dimensions): offset both.
    offset = np.eye(len(sigma1)) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    # Rounding gives tiny imaginary parts; large ones mean a broken input.
    max_imag = np.max(np.abs(np.diagonal(covmean).imag))
    if max_imag > 1e-3:
      raise ValueError(f'sqrtm(S1 S2) has an imaginary component of '
                       f'{max_imag:.3g}: are both covariances PSD?')
    covmean = covmean.real
  return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """Tr((S1 S2)^(1/2)) from two symmetric eigendecompositions.

  S1 S2 is similar to S1^(1/2) S2 S1^(1/2), a symmetric PSD matrix, so the
  trace is the sum of the square roots of its eigenvalues: exact, about 10x
  faster than sqrtm at D = 2048 and well defined for singular covariances.
  """
  eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
  half = eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))  # S1^(1/2) V
  inner = half.T @ sigma2 @ half
  inner = (inner + inner.T) / 2  # symmetric up to rounding; make it exact
  return float(np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = SQRTM_EPS,
                     method: str = 'sqrtm') -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

  Args:
    mu1, mu2: means (D,).
    sigma1, sigma2: covariances (D, D).
    eps: diagonal offset used when sqrtm(S1 S2) is not finite ('sqrtm').
    method: 'sqrtm' (scipy.linalg.sqrtm and the usual handling of complex
      parts, as every published FID code) or 'eigh' (the same quantity from
      symmetric eigendecompositions; faster, equal to ~1e-9 relative on
      full-rank covariances, see tests/test_eval_metrics.py).

  Returns:
    ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2)).
  """
  mu1, mu2 = np.atleast_1d(np.float64(mu1)), np.atleast_1d(np.float64(mu2))
  sigma1 = np.atleast_2d(np.float64(sigma1))
  sigma2 = np.atleast_2d(np.float64(sigma2))
  dim = len(mu1)
  for name, value, shape in (('mu2', mu2, (dim,)), ('sigma1', sigma1,
                                                    (dim, dim)),
                             ('sigma2', sigma2, (dim, dim))):
    if value.shape != shape:
      raise ValueError(f'{name} has shape {value.shape}, expected {shape} '
                       f'(mu1 has {dim} dimensions).')
  if method == 'sqrtm':
    trace_sqrt = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
  elif method == 'eigh':
    trace_sqrt = _trace_sqrt_product_eigh(sigma1, sigma2)
  else:
    raise ValueError(f"method must be 'sqrtm' or 'eigh', got {method!r}.")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) -
               2 * trace_sqrt)


def fid(features_a: np.ndarray, features_b: np.ndarray,
        method: str = 'sqrtm') -> float:
  """FID between two feature sets (N_a, D) and (N_b, D)."""
  a = _as_features(features_a, 'features_a')
  b = _as_features(features_b, 'features_b')
  _check_same_dim(a, b)
  return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b),
                          method=method)


def kid(features_a: np.ndarray, features_b: np.ndarray,
        num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance: unbiased MMD^2, cubic polynomial kernel.

  Each of `num_subsets` rounds draws m = min(subset_size, N_a, N_b) rows of
  each set without replacement and computes the unbiased estimate

    sum_{i != j} [k(a_i, a_j) + k(b_i, b_j)] / (m (m - 1))
      - 2 sum_{i, j} k(a_i, b_j) / m^2,   k(x, y) = (x.y / D + 1)^3,

  whose expectation is 0 when both sets come from one distribution.

  Args:
    features_a, features_b: (N_a, D) and (N_b, D).
    num_subsets: rounds (100 is the usual).
    subset_size: rows per set and round (1,000 is the usual).
    seed: the subsets' seed.

  Returns:
    (mean, standard error): the mean over rounds and the standard deviation
    of the rounds' values divided by sqrt(num_subsets). The error measures
    how much the subset draws move the mean; the rounds reuse the same
    samples, so it does not include the samples' own variability.
  """
  a = _as_features(features_a, 'features_a')
  b = _as_features(features_b, 'features_b')
  _check_same_dim(a, b)
  if num_subsets < 1 or subset_size < 2:
    raise ValueError(f'need num_subsets >= 1 and subset_size >= 2, got '
                     f'{num_subsets} and {subset_size}.')
  dim = a.shape[1]
  m = min(subset_size, len(a), len(b))
  rng = np.random.default_rng(seed)
  values = np.empty(num_subsets)
  for i in range(num_subsets):
    x = a[rng.choice(len(a), m, replace=False)]
    y = b[rng.choice(len(b), m, replace=False)]
    k_xx = (x @ x.T / dim + 1) ** 3
    k_yy = (y @ y.T / dim + 1) ** 3
    k_xy = (x @ y.T / dim + 1) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy))
    values[i] = within / (m * (m - 1)) - 2 * k_xy.sum() / m**2
  std_err = (values.std(ddof=1) / np.sqrt(num_subsets) if num_subsets > 1
             else float('nan'))
  return float(values.mean()), float(std_err)


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """(n, D), (m, D) -> (n, m) squared Euclidean distances, >= 0."""
  d = (np.einsum('ij,ij->i', x, x)[:, None] - 2 * x @ y.T +
       np.einsum('ij,ij->i', y, y)[None, :])
  return np.maximum(d, 0)


def _kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
  """Squared distance from each row of x to its k-th nearest other row."""
  radii = np.empty(len(x))
  for start in range(0, len(x), _ROWS_PER_BLOCK):
    d = _squared_distances(x[start:start + _ROWS_PER_BLOCK], x)
    # Index k of the sorted row: index 0 is the point itself.
    radii[start:start + len(d)] = np.partition(d, k, axis=1)[:, k]
  return radii


def precision_recall(real_features: np.ndarray, fake_features: np.ndarray,
                     k: int = 3) -> tuple[float, float]:
  """Improved precision and recall (Kynkaanniemi et al. 2019).

  Args:
    real_features: (N_r, D).
    fake_features: (N_f, D), the generated samples.
    k: the neighbourhood size; 3, the paper's choice.

  Returns:
    (precision, recall) in [0, 1]: the share of fake points within the k-NN
    radius of some real point, and the share of real points within the k-NN
    radius of some fake point.
  """
  real = _as_features(real_features, 'real_features')
  fake = _as_features(fake_features, 'fake_features')
  _check_same_dim(real, fake)
  if not 1 <= k < min(len(real), len(fake)):
    raise ValueError(f'k must be from 1 to min(N_real, N_fake) - 1 = '
                     f'{min(len(real), len(fake)) - 1}, got {k}.')
  real_radii = _kth_neighbour_radii(real, k)
  fake_radii = _kth_neighbour_radii(fake, k)
  # One pass over the real-fake distances serves both directions.
  fake_inside = np.zeros(len(fake), bool)
  real_inside = np.zeros(len(real), bool)
  for start in range(0, len(real), _ROWS_PER_BLOCK):
    rows = slice(start, start + _ROWS_PER_BLOCK)
    d = _squared_distances(real[rows], fake)
    fake_inside |= (d <= real_radii[rows, None]).any(0)
    real_inside[rows] = (d <= fake_radii[None, :]).any(1)
  return float(fake_inside.mean()), float(real_inside.mean())
