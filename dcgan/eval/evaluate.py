"""Scores a generator, or a set of real images, against its training data.

One call gathers every number of the evaluation, each with its protocol:

* Inception metrics (`reference.score`): FID, KID with its standard error,
  precision and recall, against cached statistics of `num_reference` training
  images;
* the anime-face detection rate (`faces.detection_rate`), when a cascade file
  is configured;
* mode coverage (`attributes.mode_coverage`) from an attribute classifier
  trained on the dataset's labels (the built-in avatars' own, or a labels CSV
  beside a folder of faces), with the same numbers for real held-out images
  as the floor.

The images scored are the generator's samples (`evaluate_generator`), or real
images (`evaluate_real`): the training set's images outside the reference
subset ('heldout', the real-vs-real floor), or any folder or .zip of images.
"""

import json
import logging
import math
import os
import time
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from dcgan import errors, sampling
from dcgan.data import pipeline

logger = logging.getLogger(__name__)

HELDOUT = 'heldout'
GENERATE_BATCH = 500


def get_default_eval_config() -> ml_collections.ConfigDict:
  """`config.eval`: what `experiments.evaluate` and the training loop score."""
  config = ml_collections.ConfigDict()
  config.num_samples = 10_000  # generated images of a full evaluation
  config.num_reference = 10_000  # training images of the reference statistics
  config.seed = 0  # of the generated images' latents
  config.inception_batch_size = 32
  config.kid_subsets = 100
  config.kid_subset_size = 1000
  config.pr_k = 3
  # lbpcascade_animeface.xml (nagadomi/lbpcascade_animeface); '' skips the
  # face detection rate.
  config.cascade_path = ''
  # Mode coverage needs labels: the built-in avatars have them; a folder
  # source needs a labels CSV ('' looks for labels.csv beside it).
  config.coverage = True
  config.labels_csv = ''
  config.classifier_num_steps = 0  # 0: the classifier's own default
  # In the training loop (every `config.eval_every_steps`): fewer samples,
  # FID and KID only; the best checkpoint by FID is kept apart.
  config.loop_num_samples = 2_000
  return config


# ---------------------------------------------------------------- images --


def heldout_indices(data_config, num_reference: int, num: int,
                    seed: int = 0) -> np.ndarray:
  """Training-set indices outside the reference subset: `num`, seeded.

  Raises:
    errors.ConfigError (a ValueError): fewer than `num` images are left
      outside the subset.
  """
  from dcgan.eval import reference  # pylint: disable=g-import-not-at-top
  size = pipeline.describe(data_config)['num_examples']
  taken = reference.subset_indices(size, num_reference)
  rest = np.setdiff1d(np.arange(size), taken)
  if len(rest) < num:
    raise errors.ConfigError(
        f'only {len(rest)} of the dataset\'s {size} images lie outside the '
        f'{len(taken)}-image reference subset, fewer than num = {num}; '
        'ask for fewer images or a smaller reference.')
  rng = np.random.default_rng(seed)
  return np.sort(rng.permutation(rest)[:num])


def _real_images(data_config, image_size: int, what: str, num: int,
                 num_reference: int) -> tuple[np.ndarray, dict[str, Any]]:
  """(uint8 images, description) of 'heldout' or a folder/.zip path."""
  from dcgan.eval import reference  # pylint: disable=g-import-not-at-top
  if what == HELDOUT:
    source_config = data_config
    indices = heldout_indices(data_config, num_reference, num)
    described = {'real': HELDOUT, 'dataset': pipeline.describe(data_config)}
  else:
    if not epath.Path(what).exists():
      raise FileNotFoundError(
          f'{what} does not exist: the real images to score are \'heldout\' '
          'or a folder or .zip of images.')
    source_config = ml_collections.ConfigDict(data_config.to_dict())
    source_config.source, source_config.path = 'folder', what
    dataset = pipeline.describe(source_config)  # hashes the files: once
    indices = reference.subset_indices(dataset['num_examples'], num, seed=1)
    described = {'real': what, 'dataset': dataset}
  images = np.concatenate(list(reference.real_image_batches(
      source_config, image_size, indices)))
  return images, described


# ---------------------------------------------------------------- scores --


def score_images(images: np.ndarray, run_config, eval_config, *,
                 step: int | None = None, inception: bool = True,
                 faces: bool = True, coverage: bool = True
                 ) -> dict[str, Any]:
  """Every configured score of uint8 images (N, H, W, 3) vs the training set.

  Args:
    images: the images scored: samples or real ones, at the run's size.
    run_config: the training run's config (data, image_size).
    eval_config: `get_default_eval_config()`-like settings.
    step: the checkpoint step, recorded in the protocol.
    inception, faces, coverage: which parts to compute (faces also needs
      `eval_config.cascade_path`, coverage `eval_config.coverage`).

  Returns:
    A JSON-able dict: 'inception' (`reference.score`), 'faces'
    (`faces.detection_rate`), 'coverage' ({'samples', 'real_floor',
    'classifier'}; 'real_floor' needs fewer images than the dataset has),
    and 'seconds' per part; skipped parts are absent and listed in
    'skipped' with the reason.
  """
  result: dict[str, Any] = {'num_images': len(images), 'step': step,
                            'seconds': {}, 'skipped': {}}
  if faces and eval_config.cascade_path:
    from dcgan.eval import faces as faces_lib  # pylint: disable=g-import-not-at-top
    faces_lib.load_cascade(eval_config.cascade_path)  # fails before the work
  if coverage and eval_config.coverage:
    from dcgan.eval import attributes  # pylint: disable=g-import-not-at-top
    attributes.check_labels_csv(run_config.data, eval_config.labels_csv)
  if inception:
    from dcgan.eval import inception as inception_lib  # pylint: disable=g-import-not-at-top
    from dcgan.eval import reference  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    extractor = inception_lib.load_extractor(eval_config.inception_batch_size)
    stats = reference.reference_statistics(
        run_config.data, run_config.image_size, eval_config.num_reference,
        extractor=extractor)
    features = extractor(images)
    result['inception'] = reference.score(
        stats, features, step=step, kid_subsets=eval_config.kid_subsets,
        kid_subset_size=eval_config.kid_subset_size, pr_k=eval_config.pr_k)
    result['seconds']['inception'] = time.perf_counter() - start
  if faces:
    if eval_config.cascade_path:
      start = time.perf_counter()
      result['faces'] = faces_lib.detection_rate(images,
                                                 eval_config.cascade_path)
      result['faces']['cascade_path'] = os.path.abspath(
          eval_config.cascade_path)
      result['seconds']['faces'] = time.perf_counter() - start
    else:
      result['skipped']['faces'] = 'no cascade file (config.eval.cascade_path)'
  if coverage:
    if eval_config.coverage:
      _add_coverage(result, images, run_config, eval_config)
    else:
      result['skipped']['coverage'] = 'config.eval.coverage is False'
  return result


def _add_coverage(result, images, run_config, eval_config) -> None:
  from dcgan.eval import attributes  # pylint: disable=g-import-not-at-top
  data_config = run_config.data
  if data_config.source == 'folder' and not eval_config.labels_csv:
    try:
      attributes.find_labels_csv(data_config.path)
    except FileNotFoundError as e:
      result['skipped']['coverage'] = str(e)
      return
  start = time.perf_counter()
  classifier_config = attributes.get_default_classifier_config(
      data_config.source)
  if eval_config.classifier_num_steps:
    classifier_config.num_steps = eval_config.classifier_num_steps
  classifier = attributes.train_or_load(
      data_config, run_config.image_size, eval_config.labels_csv,
      config=classifier_config, log_every_steps=500)
  result['coverage'] = {
      'samples': attributes.mode_coverage(classifier, images),
      'classifier': {
          k: classifier.info[k] for k in (
              'held_out_accuracy', 'majority_accuracy', 'default_subset',
              'num_train', 'num_held_out', 'fingerprint', 'cache_directory')
          if k in classifier.info},
  }
  # The floor holds out as many dataset images as were scored and compares
  # them with the rest, so it needs a dataset larger than that; the samples'
  # own coverage stands without it.
  num_reference = len(classifier.reference_labels)
  if len(images) < num_reference:
    result['coverage']['real_floor'] = attributes.coverage_floor(
        classifier, len(images))
  else:
    result['skipped']['coverage real floor'] = (
        f'{len(images)} images scored, but the dataset has only '
        f'{num_reference}: the floor holds out as many real images as were '
        f'scored and compares them with the rest. Score fewer than '
        f'{num_reference} (--num) for it.')
  result['seconds']['coverage'] = time.perf_counter() - start


def evaluate_generator(workdir, eval_config=None, *, step: int | None = None,
                       num: int | None = None) -> dict[str, Any]:
  """Scores `num` samples of a run's generator (its latest checkpoint)."""
  generator, variables, run_config, step = sampling.load_generator(workdir,
                                                                   step)
  eval_config = resolve_eval_config(eval_config, run_config)
  num = num or eval_config.num_samples
  start = time.perf_counter()
  images = sampling.sample_images(generator, variables, run_config, num,
                                  eval_config.seed, batch_size=GENERATE_BATCH)
  generate_seconds = time.perf_counter() - start
  result = score_images(images, run_config, eval_config, step=step)
  result['seconds']['generate'] = generate_seconds
  result['what'] = {'generator': os.path.abspath(os.fspath(workdir)),
                    'step': step, 'seed': eval_config.seed}
  return result


def evaluate_real(workdir, what: str, eval_config=None, *,
                  num: int | None = None) -> dict[str, Any]:
  """Scores real images against a run's training set: the floor.

  Args:
    workdir: the run whose dataset and image size are the reference.
    what: 'heldout' (training images outside the reference subset) or the
      path of a folder or .zip of images.
    eval_config: as in `score_images`; the run's `config.eval` if None.
    num: images scored (default `eval_config.num_samples`).
  """
  _, _, run_config, _ = sampling.load_generator(workdir)
  eval_config = resolve_eval_config(eval_config, run_config)
  num = num or eval_config.num_samples
  images, described = _real_images(run_config.data, run_config.image_size,
                                   what, num, eval_config.num_reference)
  result = score_images(images, run_config, eval_config)
  result['what'] = described
  return result


def resolve_eval_config(eval_config, run_config) -> ml_collections.ConfigDict:
  """`eval_config`, else the run's `config.eval` over the defaults."""
  if eval_config is not None:
    return eval_config
  if 'eval' in run_config:
    merged = get_default_eval_config()
    merged.update(run_config.eval)
    return merged
  return get_default_eval_config()


# ---------------------------------------------------------------- output --


def flat_scores(result: dict[str, Any]) -> dict[str, float]:
  """The headline numbers of a result, flat: {'fid': ..., 'kid': ..., ...}."""
  flat = {}
  for key, value in result.get('inception', {}).items():
    if key != 'protocol':
      flat[key] = value
  if 'faces' in result:
    flat['face_detection_rate'] = result['faces']['face_detection_rate']
  if 'coverage' in result:
    for name in ('samples', 'real_floor'):
      for key, value in result['coverage'].get(name, {}).items():
        if isinstance(value, (int, float)):
          flat[f'{key}{"" if name == "samples" else " (real floor)"}'] = value
  return flat


def format_table(result: dict[str, Any]) -> str:
  """A two-column text table of `flat_scores`, then the skipped parts."""
  rows = [('images', str(result['num_images']))]
  for key, value in flat_scores(result).items():
    rows.append((key, f'{value:.6g}' if isinstance(value, float)
                 and math.isfinite(value) else str(value)))
  accuracy = result.get('coverage', {}).get('classifier', {}).get(
      'held_out_accuracy')
  if accuracy:
    rows.append(('classifier held-out accuracy', ', '.join(
        f'{k} {v:.3f}' for k, v in accuracy.items())))
  for part, seconds in result['seconds'].items():
    rows.append((f'seconds: {part}', f'{seconds:.1f}'))
  for part, why in result['skipped'].items():
    rows.append((f'skipped: {part}', why))
  width = max(len(k) for k, _ in rows)
  return '\n'.join(f'{k.ljust(width)}  {v}' for k, v in rows)


def write_result(result: dict[str, Any], workdir) -> epath.Path:
  """Writes the result as JSON into <workdir>/eval/; returns the path."""
  what = result['what']
  if 'generator' in what:
    name = f'step_{what["step"]}_n{result["num_images"]}.json'
  else:
    label = HELDOUT if what['real'] == HELDOUT else 'real_' + epath.Path(
        what['real']).stem
    name = f'{label}_n{result["num_images"]}.json'
  path = epath.Path(workdir) / 'eval' / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(result, indent=1, default=_json_default) + '\n')
  return path


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, (tuple, set)):
    return list(value)
  raise TypeError(f'not JSON-able: {type(value).__name__}')
