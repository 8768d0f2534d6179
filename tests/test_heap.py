"""Tests of dcgan.heap: freed memory kept for reuse under glibc."""

import resource
import subprocess
import sys

import numpy as np
import pytest

from dcgan import heap

SIZE = 200 << 20  # well above glibc's 32 MiB mmap ceiling


def _faults_of_second_allocation() -> int:
  """Page faults of touching a large block after freeing an equal one."""
  block = np.ones(SIZE, np.uint8)
  del block
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = np.ones(SIZE, np.uint8)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  del block
  return faults


@pytest.mark.skipif(heap._glibc() is None,  # pylint: disable=protected-access
                    reason='needs glibc malloc without MALLOC_* settings')
def test_freed_blocks_are_reused_inside_and_released_after():
  pages = SIZE // resource.getpagesize()
  # Outside, the new block is freshly mapped: one fault per page (fewer with
  # transparent huge pages, still many).
  assert _faults_of_second_allocation() > pages // 1000
  with heap.reuse_freed_memory():
    with heap.reuse_freed_memory():  # nesting keeps the outer setting
      pass
    assert _faults_of_second_allocation() < pages // 100
  assert heap._depth == 0  # pylint: disable=protected-access
  assert _faults_of_second_allocation() > pages // 1000


_COMPUTATION_FAULTS = r"""
import resource, statistics, sys
import numpy as np
import dcgan  # computes on the calling thread
from dcgan import heap
import jax
from jax import lax
import jax.numpy as jnp
if sys.argv[1] == 'async':  # what a program that wants it back does
  jax.config.update('jax_cpu_enable_async_dispatch', True)

@jax.jit
def extremes(a, b, c):
  outer = lax.dot_general(a, b, (((0,), (0,)), ((), ())))  # a temporary
  return jnp.max(outer, axis=1) + jnp.min(outer, axis=0).sum() + c.sum()

a, b = jnp.ones((16, int(sys.argv[2]) // 4 // 4096)), jnp.ones((16, 4096))
# 16 bytes past a 64-byte boundary: jax copies it rather than aliasing it.
raw = np.ones(2**20 + 16, np.float32)
skip = (16 - raw.ctypes.data % 64) % 64 // 4
host = raw[skip:skip + 2**20]
faults = []
with heap.reuse_freed_memory():
  for _ in range(8):
    c = host if sys.argv[1] == 'host-input' else heap.to_device(host)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    extremes(a, b, c).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults[2:]))  # the first two settle the heap
"""


@pytest.mark.skipif(heap._glibc() is None,  # pylint: disable=protected-access
                    reason='needs glibc malloc without MALLOC_* settings')
def test_computations_reuse_their_freed_temporaries():
  # XLA allocates a computation's temporaries on the thread that runs it.
  # On the calling thread (`import dcgan`) that is the main arena, whose
  # freed blocks reuse_freed_memory keeps; another thread's own arena maps
  # a block over its 64 MiB heaps afresh on every call. A computation runs
  # on another thread with asynchronous dispatch, and also when an input is
  # still being copied from the host (a host array given to jit), which
  # `heap.to_device` waits for. Fresh interpreters: JAX reads the dispatch
  # setting when it creates its CPU client.
  def faults(mode):
    result = subprocess.run([sys.executable, '-c', _COMPUTATION_FAULTS, mode,
                             str(SIZE)], capture_output=True, text=True,
                            check=True)
    return float(result.stdout.split()[-1])
  pages = SIZE // resource.getpagesize()
  assert faults('async') > pages // 2
  assert faults('host-input') > pages // 2
  assert faults('calling-thread') < pages // 20


def test_to_device_returns_ready_arrays_of_the_same_values():
  host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  device = heap.to_device({'x': host})['x']
  assert device.is_ready()
  np.testing.assert_array_equal(np.asarray(device), host)


def test_user_malloc_settings_are_left_alone(monkeypatch):
  monkeypatch.setenv('MALLOC_MMAP_MAX_', '0')
  assert heap._glibc() is None  # pylint: disable=protected-access
  assert not heap.compute_on_calling_thread()
  with heap.reuse_freed_memory():
    pass


@pytest.mark.skipif(sys.platform.startswith('linux'),
                    reason='Linux has glibc; this checks the others')
def test_other_platforms_do_nothing():
  assert heap._glibc() is None  # pylint: disable=protected-access
