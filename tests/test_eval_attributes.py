"""Tests for dcgan.eval.attributes: labels, training, caching, prediction."""

import csv
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from dcgan import sampling
from dcgan.data import avatars, pipeline
from dcgan.eval import attributes

# Colours are what a 48x48 avatar shows best and what the joint coverage
# uses; shapes (mouth, face shape) need the full 50k set (the benchmark).
COLOUR_ATTRIBUTES = ('skin_tone', 'hair_color', 'eye_color', 'background')


def _procedural_config(cache_dir, num_examples):
  config = pipeline.get_default_data_config()
  config.num_examples = num_examples
  config.cache_dir = str(cache_dir)
  return config


def _tiny_classifier_config(num_steps=200):
  config = attributes.get_default_classifier_config()
  config.features = (16, 32)
  config.hidden = 128
  config.num_steps = num_steps
  config.batch_size = 32
  config.learning_rate = 3e-3
  config.flip = False  # augmentation slows a short run down
  config.holdout_fraction = 0.15
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A classifier trained on 2,000 avatars at 48x48, and its data."""
  cache = tmp_path_factory.mktemp('attr_cache')
  data_config = _procedural_config(cache, 2000)
  data = attributes.load_labelled(data_config, 48)
  config = _tiny_classifier_config()
  classifier = attributes.train_or_load(data_config, 48, config=config,
                                        data=data)
  return data_config, config, data, classifier


def test_procedural_labels_are_the_drawn_ones(tmp_path):
  data = attributes.load_labelled(_procedural_config(tmp_path, 12), 48)
  assert data.images.shape == (12, 48, 48, 3)
  assert data.images.dtype == np.uint8
  assert list(data.attributes) == list(avatars.ATTRIBUTES)
  assert data.attributes['hair_color'] == avatars.ATTRIBUTES['hair_color']
  assert data.default_subset == ('skin_tone', 'hair_color', 'eye_color')
  for i in (0, 11):
    image, labels = avatars.draw_avatar(0, i)
    assert list(data.labels[i]) == list(labels.values())
    # The training pipeline's preprocessing, exactly.
    np.testing.assert_array_equal(
        data.images[i], sampling.to_uint8(pipeline.to_model_image(image, 48)))


def test_classifier_learns_the_procedural_attributes(trained):
  _, _, _, classifier = trained
  info = classifier.info
  assert info['num_train'] == 1700 and info['num_held_out'] == 300
  accuracy, majority = info['held_out_accuracy'], info['majority_accuracy']
  assert set(accuracy) == set(avatars.ATTRIBUTES)
  for name in COLOUR_ATTRIBUTES:
    assert accuracy[name] >= 0.95, (name, accuracy)
  for name in avatars.ATTRIBUTES:
    assert accuracy[name] > majority[name] + 0.2, (name, accuracy, majority)
  assert classifier.reference_labels.shape == (2000, 8)


def test_classifier_is_cached_and_reloaded(trained, monkeypatch):
  data_config, config, data, classifier = trained
  directory = classifier.info['cache_directory']
  assert directory == attributes.cache_directory(
      data_config, data.fingerprint, 48, config)
  assert directory.startswith(data_config.cache_dir)
  assert sorted(os.listdir(directory)) == sorted(
      ['info.json', 'params.msgpack', 'reference_labels.npy'])

  def fail(*args, **kwargs):
    raise AssertionError('trained again instead of loading the cache')

  monkeypatch.setattr(attributes, 'train_classifier', fail)
  loaded = attributes.train_or_load(data_config, 48, config=config)
  assert loaded.info['held_out_accuracy'] == classifier.info[
      'held_out_accuracy']
  np.testing.assert_array_equal(loaded.reference_labels,
                                classifier.reference_labels)
  np.testing.assert_array_equal(loaded.predict(data.images[:50]),
                                classifier.predict(data.images[:50]))
  # Other settings are another classifier.
  other = _tiny_classifier_config(num_steps=10)
  assert attributes.cache_directory(data_config, data.fingerprint, 48,
                                    other) != directory


def test_predict_takes_uint8_or_unit_range_floats(trained):
  _, _, data, classifier = trained
  images = data.images[:37]
  predicted = classifier.predict(images, batch_size=16)
  assert predicted.shape == (37, 8) and predicted.dtype == np.int32
  floats = images.astype(np.float32) / 127.5 - 1
  np.testing.assert_array_equal(classifier.predict(floats), predicted)
  by_name = classifier.classify(images)
  assert list(by_name) == list(avatars.ATTRIBUTES)
  np.testing.assert_array_equal(by_name['eye_color'], predicted[:, 4])
  # 96x96 images are resized as the training pipeline does.
  big = np.stack([avatars.draw_avatar(0, i)[0] for i in range(4)])
  np.testing.assert_array_equal(classifier.predict(big), predicted[:4])
  with pytest.raises(ValueError, match=r'\(N, H, W, 3\)'):
    classifier.predict(images[0])


def test_mode_coverage_tells_real_from_collapsed(trained):
  _, _, data, classifier = trained
  real = attributes.mode_coverage(classifier, data.images[:1000])
  collapsed = attributes.mode_coverage(
      classifier, np.repeat(data.images[:1], 1000, axis=0))
  assert real['coverage_mean'] == 1.0
  assert real['joint_size'] == 5 * 10 * 8
  assert collapsed['distinct_fraction'] == 1 / 1000
  assert collapsed['coverage_mean'] < 0.3
  assert collapsed['kl_mean'] > 10 * real['kl_mean']
  assert real['joint_coverage'] > 5 * collapsed['joint_coverage']
  floor = attributes.coverage_floor(classifier, num_samples=1000)
  assert floor.keys() == real.keys()
  with pytest.raises(ValueError, match='num_samples'):
    attributes.coverage_floor(classifier, num_samples=2000)


# Folder sources with a labels CSV.


def _write_faces(folder, num):
  """num small images with distinct colours, in folder/faces/<i>.png."""
  (folder / 'faces').mkdir(parents=True)
  for i in range(num):
    Image.new('RGB', (96, 96), (i * 40 % 256, 100, 200)).save(
        folder / 'faces' / f'{i}.png')


def _write_csv(path, rows):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['file', 'eye_color', 'hair_color'])
    writer.writerows(rows)


def _folder_config(path, cache_dir):
  config = pipeline.get_default_data_config()
  config.source = 'folder'
  config.path = str(path)
  config.cache_dir = str(cache_dir)
  return config


def test_labels_csv_joins_the_images_of_a_zip(tmp_path):
  _write_faces(tmp_path / 'src', 5)
  zip_path = tmp_path / 'faces.zip'
  with zipfile.ZipFile(zip_path, 'w') as archive:
    for i in range(5):
      archive.write(tmp_path / 'src' / 'faces' / f'{i}.png', f'faces/{i}.png')
  _write_csv(tmp_path / 'labels.csv', [
      ['faces/0.png', 'blue', 'red'], ['faces/2.png', 'aqua', ''],
      ['faces/3.png', 'blue', 'blonde'], ['faces/99.png', 'red', 'red']])
  data_config = _folder_config(zip_path, tmp_path / 'cache')
  data = attributes.load_labelled(data_config, 32)
  assert data.images.shape == (5, 32, 32, 3)
  assert data.attributes == {'eye_color': ('aqua', 'blue', 'red'),
                             'hair_color': ('blonde', 'red')}
  missing = attributes.MISSING
  np.testing.assert_array_equal(data.labels, [
      [1, 1], [missing, missing], [0, missing], [1, 0], [missing, missing]])
  assert data.default_subset == ('eye_color', 'hair_color')

  # New labels, new fingerprint (and so a new cached classifier).
  _write_csv(tmp_path / 'labels.csv', [['faces/0.png', 'red', 'red'],
                                        ['faces/1.png', 'blue', 'blonde']])
  assert attributes.load_labelled(data_config, 32).fingerprint != (
      data.fingerprint)


def test_labels_inside_a_folder_match_without_the_folder_name(tmp_path):
  _write_faces(tmp_path, 3)
  _write_csv(tmp_path / 'faces' / 'labels.csv',
             [['0.png', 'blue', 'red'], ['2.png', 'red', 'pink']])
  data = attributes.load_labelled(
      _folder_config(tmp_path / 'faces', tmp_path / 'cache'), 32)
  np.testing.assert_array_equal(data.labels[:, 0], [0, attributes.MISSING, 1])


def test_match_names():
  assert attributes.match_names(
      ['faces/1.jpg', '2.jpg', 'x/faces/3.jpg', 'faces/4.jpg'],
      ['faces/1.jpg', 'faces/2.jpg', '3.jpg']) == [
          'faces/1.jpg', 'faces/2.jpg', '3.jpg', None]
  # A basename that two label rows share is not enough to match.
  assert attributes.match_names(['c/1.jpg'], ['a/1.jpg', 'b/1.jpg']) == [None]
  with pytest.raises(ValueError, match='both match'):
    attributes.match_names(['a/1.jpg', 'b/1.jpg'], ['1.jpg'])


def test_labels_errors_name_the_file(tmp_path):
  _write_faces(tmp_path / 'data', 2)
  data_config = _folder_config(tmp_path / 'data' / 'faces', tmp_path / 'c')
  with pytest.raises(FileNotFoundError, match='labels.csv'):
    attributes.load_labelled(data_config, 32)
  bad = tmp_path / 'bad.csv'
  bad.write_text('name,eye_color\n0.png,blue\n')
  with pytest.raises(ValueError, match="bad.csv.*'file' column"):
    attributes.load_labelled(data_config, 32, labels_csv=str(bad))
  twice = tmp_path / 'twice.csv'
  _write_csv(twice, [['0.png', 'a', 'b'], ['0.png', 'a', 'b']])
  with pytest.raises(ValueError, match="twice.csv.*'0.png' twice"):
    attributes.load_labelled(data_config, 32, labels_csv=str(twice))
  unmatched = tmp_path / 'unmatched.csv'
  _write_csv(unmatched, [['7.png', 'a', 'b'], ['8.png', 'c', 'd']])
  with pytest.raises(ValueError, match='No image'):
    attributes.load_labelled(data_config, 32, labels_csv=str(unmatched))
  constant = tmp_path / 'constant.csv'
  _write_csv(constant, [['0.png', 'a', 'b'], ['1.png', 'c', 'b']])
  with pytest.raises(ValueError, match="'hair_color'.*1 distinct"):
    attributes.load_labelled(data_config, 32, labels_csv=str(constant))
  with pytest.raises(FileNotFoundError, match='nothere.csv'):
    attributes.load_labelled(data_config, 32,
                             labels_csv=str(tmp_path / 'nothere.csv'))


def test_load_rejects_a_folder_without_a_classifier(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a saved'):
    attributes.load(str(tmp_path))


def test_classifier_config_per_source():
  procedural = attributes.get_default_classifier_config('procedural')
  folder = attributes.get_default_classifier_config('folder')
  assert folder.dropout > procedural.dropout == 0.0
  with pytest.raises(ValueError, match='source'):
    attributes.get_default_classifier_config('web')
