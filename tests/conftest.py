"""Shared fixtures: the tiny config and paths to the optional shared data."""

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
