r"""Trains a DCGAN on avatar faces.

  python -m experiments.avatar --workdir runs/a1
  python -m experiments.avatar --workdir runs/a2 \
      --config.data.source=folder --config.data.path=faces.zip
  python -m experiments.avatar --workdir runs/a3 \
      --config experiments/configs/dcgan64.py

Running the same command again resumes from the latest checkpoint.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from dcgan import train
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'avatar.py'),
    'A config file; override its values with --config.key=value.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, samples and metrics go.',
    required=True)


def main(argv):
  cli.start(argv)
  with cli.user_errors():
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
