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

A loaded executable is the one that was compiled, so a run gives the same
bits either way: the tests share one cache (tests/conftest.py), so in
tests/test_train.py's kill-anywhere test each relaunch loads the programs the
first launch compiled, and ends in the bits of the run never killed.
"""

import hashlib
import os
import platform

import jax
from absl import logging

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
