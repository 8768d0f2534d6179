"""Bad config values are refused with the key, the value and what is allowed."""

import pytest

from dcgan import train, validation
from experiments.configs import avatar, dcgan64, tiny


@pytest.mark.parametrize('get_config', [avatar.get_config, dcgan64.get_config,
                                        tiny.get_config])
def test_shipped_configs_are_valid(get_config):
  validation.validate_config(get_config())


# (key, bad value, what the error says is allowed)
BAD_VALUES = [
    # Sizes: not a multiple of 16, out of range, zero, negative.
    ('image_size', 50, 'must be a multiple of 16 from 32 to 128'),
    ('image_size', 16, 'must be an integer from 32 to 128'),
    ('image_size', 144, 'must be an integer from 32 to 128'),
    ('image_size', 0, 'must be an integer from 32 to 128'),
    ('image_size', -48, 'must be an integer from 32 to 128'),
    ('batch_size', 0, 'must be an integer >= 1'),
    ('batch_size', -64, 'must be an integer >= 1'),
    ('latent_dim', -3, 'must be an integer >= 1'),
    ('latent_dim', 0, 'must be an integer >= 1'),
    ('model.g_base_features', 0, 'must be an integer >= 1'),
    ('model.d_base_features', -8, 'must be an integer >= 1'),
    ('model.kernel_size', 0, 'must be an integer from 1 to 9'),
    ('data.source_size', 0, 'must be an integer >= 16 and <= 512'),
    ('data.num_examples', -1, 'must be an integer >= 1'),
    # Unknown names.
    ('latent_dist', 'cauchy', "must be one of ('uniform', 'normal')"),
    ('model.conv_impl', 'cudnn', "must be one of ('auto', 'xla', 'matmul')"),
    ('model.dtype', 'float16', "must be one of ('float32', 'bfloat16')"),
    ('g_loss', 'hinge', "must be one of ('non_saturating', 'minimax')"),
    ('data.source', 'web', "must be one of ('procedural', 'folder')"),
    ('health.remedy', 'pray',
     "must be one of ('lower_learning_rate', 'skip_batches')"),
    ('health.collapse_action', 'ignore', "must be one of ('warn', 'rollback')"),
    # Wrong types.
    ('image_size', 48.0, 'must be an integer'),
    ('batch_size', '64', 'must be an integer'),
    ('num_train_steps', 10.5, 'must be an integer'),
    ('seed', None, 'must be an integer'),
    ('model.g_last_hidden_bn', 'no', 'must be True or False'),
    ('g_reuse_latents', 1, 'must be True or False'),
    ('d_learning_rate', '2e-4', 'must be a number'),
    ('keep_checkpoints', True, 'must be an integer'),
    ('data.path', 3, 'must be a string'),
    ('compilation_cache_dir', None, "must be a folder's path, or ''"),
    # Out of range.
    ('g_learning_rate', 0.0, 'must be in (0.0, 1.0]'),
    ('adam_b1', 1.0, 'must be in [0.0, 1.0)'),
    ('g_steps_per_d_step', 0, 'must be an integer from 1 to 16'),
    ('num_train_steps', 0, 'must be an integer >= 1'),
    ('checkpoint_every_steps', -1, 'must be an integer >= 1'),
    ('keep_checkpoints', 0, 'must be an integer >= 1'),
    ('health.max_rollbacks', -1, 'must be an integer >= 0'),
    ('health.learning_rate_factor', 1.0, 'must be in (0.0, 1.0)'),
    ('health.skip_batches', 0, 'must be an integer >= 1'),
    ('health.collapse_window', -5, 'must be an integer >= 0'),
    ('health.collapse_d_fake', 2.0, 'must be in (0.0, 1.0]'),
    ('debug.nan_at_step', -1, 'must be an integer >= 0'),
]


def _set(config, key: str, value):
  node, leaf = config, key
  if '.' in key:
    parent, leaf = key.split('.')
    node = config[parent]
  # Bypass ConfigDict's type check to pass a value of the wrong type.
  node._fields[leaf] = value  # pylint: disable=protected-access


def _bad_value_ids():
  return [f'{key}={value!r}' for key, value, _ in BAD_VALUES]


@pytest.mark.parametrize('key, value, message', BAD_VALUES,
                         ids=_bad_value_ids())
def test_bad_value_is_named_with_what_is_allowed(key, value, message):
  config = avatar.get_config()
  _set(config, key, value)
  with pytest.raises(validation.ConfigError) as error:
    validation.validate_config(config)
  assert f'config.{key} = {value!r} is invalid' in str(error.value)
  assert message in str(error.value)


@pytest.mark.parametrize('key, value, message', BAD_VALUES,
                         ids=_bad_value_ids())
def test_training_refuses_before_writing_or_compiling(key, value, message,
                                                      tmp_path):
  config = tiny.get_config()
  _set(config, key, value)
  with pytest.raises(validation.ConfigError, match=r'is invalid: ') as error:
    train.train_and_evaluate(config, tmp_path / 'run')
  assert message in str(error.value)
  # The workdir is made before anything compiles: refused before that.
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('batch_size, num_devices, ok', [
    (64, 1, True), (64, 4, True), (64, 8, True), (6, 4, False),
    (100, 8, False), (8, 3, False)])
def test_batch_must_split_evenly_over_devices(batch_size, num_devices, ok):
  config = avatar.get_config()
  config.batch_size = batch_size
  if ok:
    validation.validate_config(config, num_devices=num_devices)
    return
  with pytest.raises(validation.ConfigError) as error:
    validation.validate_config(config, num_devices=num_devices)
  assert str(error.value) == (
      f'config.batch_size = {batch_size} is invalid: must be divisible by '
      f'the number of devices ({num_devices}).')


def test_batch_larger_than_the_built_in_set_is_refused():
  config = tiny.get_config()
  config.batch_size = 128  # the tiny set has 64 images
  with pytest.raises(validation.ConfigError,
                     match=r'config\.batch_size = 128 is invalid: must be at '
                     r'most config\.data\.num_examples \(64\)'):
    validation.validate_config(config)


def test_folder_source_needs_a_path():
  config = avatar.get_config()
  config.data.source = 'folder'
  with pytest.raises(validation.ConfigError, match=r"config\.data\.path = ''"):
    validation.validate_config(config)


def test_missing_key_says_where_to_start():
  config = avatar.get_config()
  del config['health']
  with pytest.raises(validation.ConfigError,
                     match=r'config\.health\.max_rollbacks is missing: start '
                     'from a config in experiments/configs/'):
    validation.validate_config(config)
