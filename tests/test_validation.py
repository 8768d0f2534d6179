"""Bad config values are refused with the key, the value and what is allowed."""

import pytest

from dcgan import validation
from experiments.configs import avatar, dcgan64, tiny


@pytest.mark.parametrize('get_config', [avatar.get_config, dcgan64.get_config,
                                        tiny.get_config])
def test_shipped_configs_are_valid(get_config):
  validation.validate_config(get_config())


@pytest.mark.parametrize('key, value, message', [
    ('image_size', 50, 'must be a multiple of 16 from 32 to 128'),
    ('image_size', 16, 'must be an integer from 32 to 128'),
    ('image_size', 144, 'must be an integer from 32 to 128'),
    ('image_size', 48.0, 'must be an integer'),
    ('batch_size', 0, 'must be an integer >= 1'),
    ('latent_dim', -3, 'must be an integer >= 1'),
    ('latent_dist', 'cauchy', "must be one of ('uniform', 'normal')"),
    ('model.g_base_features', 0, 'must be an integer >= 1'),
    ('model.conv_impl', 'cudnn', "must be one of ('auto', 'xla', 'matmul')"),
    ('model.dtype', 'float16', "must be one of ('float32', 'bfloat16')"),
    ('model.g_last_hidden_bn', 'no', 'must be True or False'),
    ('g_loss', 'hinge', "must be one of ('non_saturating', 'minimax')"),
    ('g_learning_rate', 0.0, 'must be in (0.0, 1.0]'),
    ('adam_b1', 1.0, 'must be in [0.0, 1.0)'),
    ('g_steps_per_d_step', 0, 'must be an integer from 1 to 16'),
    ('num_train_steps', 0, 'must be an integer >= 1'),
    ('checkpoint_every_steps', -1, 'must be an integer >= 1'),
    ('data.source', 'web', "must be one of ('procedural', 'folder')"),
])
def test_bad_value_is_named_with_what_is_allowed(key, value, message):
  config = avatar.get_config()
  node, leaf = config, key
  if '.' in key:
    parent, leaf = key.split('.')
    node = config[parent]
  # Bypass ConfigDict's type check to pass a value of the wrong type.
  node._fields[leaf] = value  # pylint: disable=protected-access
  with pytest.raises(validation.ConfigError) as error:
    validation.validate_config(config)
  assert f'config.{key} = {value!r} is invalid' in str(error.value)
  assert message in str(error.value)


def test_folder_source_needs_a_path():
  config = avatar.get_config()
  config.data.source = 'folder'
  with pytest.raises(validation.ConfigError, match=r"config\.data\.path = ''"):
    validation.validate_config(config)
