"""The DCGAN paper's 64x64 network (4x4 kernels, BN on all hidden G layers)."""

import ml_collections

from experiments.configs import avatar


def get_config() -> ml_collections.ConfigDict:
  config = avatar.get_config()
  config.image_size = 64
  config.model.kernel_size = 4
  config.model.g_last_hidden_bn = True
  return config
