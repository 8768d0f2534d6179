"""A tiny configuration for tests and smoke runs (seconds on a CPU)."""

import ml_collections

from experiments.configs import avatar


def get_config() -> ml_collections.ConfigDict:
  config = avatar.get_config()
  config.data.num_examples = 64
  config.image_size = 32
  config.batch_size = 8
  config.latent_dim = 16
  config.model.g_base_features = 8
  config.model.d_base_features = 8
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.sample_every_steps = 3
  config.checkpoint_every_steps = 3
  config.keep_checkpoints = 2
  config.num_sample_images = 16
  return config
