"""Training data: procedural avatars or a folder/zip of images, via TFDS+grain.

Typical use:

  config.data = get_default_data_config()
  validate_data_config(config.data)
  iterator = create_train_iterator(config.data, image_size=48, batch_size=64,
                                   seed=0)
  batch = next(iterator)  # {'image': float32 (64, 48, 48, 3) in [-1, 1]}
"""

from dcgan.data.avatars import ATTRIBUTES, draw_avatar, draw_avatars
from dcgan.data.builders import (prepare_folder, prepare_procedural,
                                 resolve_cache_dir)
from dcgan.data.pipeline import (create_train_dataset, create_train_iterator,
                                 describe, get_default_data_config,
                                 load_data_source, prepare,
                                 validate_data_config)

__all__ = [
    'ATTRIBUTES', 'create_train_dataset', 'create_train_iterator', 'describe',
    'draw_avatar', 'draw_avatars', 'get_default_data_config',
    'load_data_source', 'prepare', 'prepare_folder', 'prepare_procedural',
    'resolve_cache_dir', 'validate_data_config',
]
