"""A persistent cache of XLA's compiled programs across runs.

Compiling the training step takes most of a run's start-up on a CPU, and a
resumed or repeated run compiles the very same programs again: relaunched to
train 2 more steps, the reference config took 41.1-41.3 s without the cache
and 16.1-16.9 s with it (2 cores, loaded, two launches each). JAX can keep
compiled executables on disk, keyed by the program, the jax version, the
compiler options and the device kind, and load them instead of compiling.
`enable` points it at a folder per host CPU model, because the key says only
"cpu": code compiled for one machine's instructions (AVX-512, AMX) must not
be loaded on another that lacks them, say from a shared home directory.
`enable_for_run` gives the commands that read a trained run (sampling,
evaluation, report) the folder that run uses.

A loaded executable is the one that was compiled, so a run gives the same
bits either way: the tests share one cache (tests/conftest.py), so in
tests/test_train.py's kill-anywhere test each relaunch loads the programs the
first launch compiled, and ends in the bits of the run never killed.
"""

import hashlib
import json
import os
import platform

import jax
from absl import logging

# config.compilation_cache_dir's default (experiments/configs/avatar.py).
DEFAULT_DIRECTORY = '~/.cache/dcgan/xla'

# Least recently used entries go beyond this many bytes. The reference
# recipe's four programs (state, step, sample grid, finiteness) take 1.1 MB.
MAX_BYTES = 2**30


def host_key() -> str:
  """A short name for this host's CPU: its model and instruction set."""
  described = {'machine': platform.machine(),
               'processor': platform.processor()}
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      for line in f:  # the first CPU's block ('Features': ARM's flags)
        if not line.strip():
          break  # the next CPU's block repeats it
        name, _, value = line.partition(':')
        if name.strip() in ('model name', 'flags', 'Features'):
          described[name.strip()] = value.strip()
  except OSError:
    pass  # not Linux: the machine and processor names alone
  digest = hashlib.sha256(repr(sorted(described.items())).encode())
  return f'{platform.machine() or "cpu"}-{digest.hexdigest()[:12]}'


def enable(directory: str) -> str | None:
  """Keeps compiled programs in `directory`/<host key>; returns the folder.

  Does nothing and returns JAX's own folder if one is set already
  (`JAX_COMPILATION_CACHE_DIR` or `jax.config`), and returns None for an
  empty `directory`. A folder that cannot be made leaves the cache off with
  a warning: a run does not stop for it. Takes effect only if nothing has
  been compiled in this process yet: `train.train_and_evaluate` calls it
  before it compiles anything.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  if not directory:
    return None
  path = os.path.join(os.path.abspath(os.path.expanduser(directory)),
                      host_key())
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    logging.warning('Compiled programs are not cached: cannot make %s (%s). '
                    'Set config.compilation_cache_dir to a writable folder, '
                    "or to '' to turn the cache off.", path, e)
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  if jax.config.jax_compilation_cache_max_size == -1:
    jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  return path


def enable_for_run(path) -> str | None:
  """`enable` with the folder of the run at `path`, for commands that read it.

  `experiments.sample`, `evaluate` and `report` compile G (and the
  evaluation's networks) again on every call; this points them at the cache
  the run itself uses, read from the workdir's config.json
  (`compilation_cache_dir`, '' for off; `DEFAULT_DIRECTORY` where the file
  or the key is missing). Call it before anything compiles.

  Args:
    path: a training workdir, its checkpoints/ or one checkpoint folder.

  Returns:
    What `enable` returns.
  """
  from dcgan import sampling  # pylint: disable=g-import-not-at-top
  checkpoints, _ = sampling.find_checkpoints(path)
  directory = DEFAULT_DIRECTORY
  config_path = checkpoints.parent / 'config.json'
  if config_path.exists():
    try:
      directory = json.loads(config_path.read_text()).get(
          'compilation_cache_dir', DEFAULT_DIRECTORY)
    except (ValueError, AttributeError):
      pass  # loading the checkpoint reports a broken run, not this
  if not isinstance(directory, str):
    directory = DEFAULT_DIRECTORY
  return enable(directory)
