"""The reference recipe: the tutorial's DCGAN on 48x48 avatars.

Every value is the tutorial's unless its comment says otherwise.
"""

import ml_collections

from dcgan import compile_cache, health
from dcgan.data import pipeline
from dcgan.eval import evaluate


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Not in the tutorial: compiled programs are kept here (in a folder per
  # host CPU) so that a resumed or repeated run loads them instead of
  # compiling again; '' turns that off. See dcgan/compile_cache.py.
  config.compilation_cache_dir = compile_cache.DEFAULT_DIRECTORY

  # 'procedural' (the built-in avatars) or 'folder' (a folder or .zip of
  # images at config.data.path); see dcgan/data/pipeline.py for every key.
  config.data = pipeline.get_default_data_config()
  config.image_size = 48
  config.batch_size = 64  # global, over all devices

  config.latent_dim = 100
  config.latent_dist = 'uniform'  # U(-1, 1); or 'normal' for N(0, 1)

  config.model = ml_collections.ConfigDict()
  config.model.g_base_features = 64
  config.model.d_base_features = 64
  config.model.kernel_size = 5
  config.model.g_last_hidden_bn = False  # the tutorial's last hidden G layer has no BN
  config.model.conv_impl = 'auto'  # 'matmul' on CPU and GPU, 'xla' on TPU
  config.model.dtype = 'float32'

  config.g_loss = 'non_saturating'
  config.g_learning_rate = 2e-4
  config.d_learning_rate = 2e-4
  config.adam_b1 = 0.5
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  config.g_steps_per_d_step = 2
  config.g_reuse_latents = True  # G steps reuse the D step's latents

  # Not in the tutorial (it runs a fixed number of epochs): ~13 epochs of the
  # built-in 50,000 images.
  config.num_train_steps = 10_000
  config.log_every_steps = 50
  config.sample_every_steps = 500
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3
  config.num_sample_images = 64  # an 8x8 grid from fixed latents

  # Not in the tutorial: what happens when training produces NaN/inf or D
  # collapses (roll back, remedy, stop); see dcgan/health.py. Without such
  # trouble it changes nothing.
  config.health = health.get_default_health_config()
  # Not in the tutorial: FID/KID of config.eval.loop_num_samples samples every
  # this many steps (0: never; needs the eval extra), logged to metrics.jsonl,
  # and the best checkpoint by FID kept in <workdir>/best/. The settings of
  # `python -m experiments.evaluate` are there too.
  config.eval_every_steps = 0
  config.eval = evaluate.get_default_eval_config()
  # Fault injection for tests; off.
  config.debug = health.get_default_debug_config()
  return config
