"""Shared fixtures: the tiny config and paths to the optional shared data."""

import os
import pathlib

import pytest

from experiments.configs import tiny

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / 'shared' / 'datasets'


@pytest.fixture
def tiny_config(tmp_path):
  """The tiny config with its dataset cache in a temporary folder."""
  config = tiny.get_config()
  config.data.cache_dir = str(tmp_path / 'data_cache')
  return config


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA cache for the session and the subprocesses it starts.

  Many tests compile the same tiny step; compiling it once saves minutes.
  """
  import jax  # pylint: disable=g-import-not-at-top
  cache_dir = str(tmp_path_factory.mktemp('jax_cache'))
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = cache_dir
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  yield cache_dir


@pytest.fixture(scope='session')
def tiny_workdir(tmp_path_factory):
  """A run of the tiny config shared by the tests that only read one.

  6 steps: grids at steps 0, 3 and 6, checkpoints at 3 and 6, metrics at 2, 4
  and 6. Tests must not write into it.
  """
  from dcgan import train  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('tiny_run')
  config = tiny.get_config()
  config.data.cache_dir = str(root / 'data_cache')
  train.train_and_evaluate(config, root / 'run')
  return root / 'run'
