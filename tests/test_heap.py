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


_THREAD_FAULTS = r"""
import ctypes, resource, sys, threading
if sys.argv[1] == 'dcgan':
  import dcgan  # shares the main arena
  from dcgan import heap
  reuse = heap.reuse_freed_memory
else:  # the same malloc settings, without sharing the main arena
  import contextlib
  libc = ctypes.CDLL('libc.so.6')
  libc.mallopt(-4, 0)
  libc.mallopt(-1, 2**31 - 1)
  reuse = contextlib.nullcontext
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = int(sys.argv[2])
faults = []
def allocate_twice():
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  libc.free(block)
with reuse():
  thread = threading.Thread(target=allocate_twice)
  thread.start()
  thread.join()
print(faults[0])
"""


@pytest.mark.skipif(heap._glibc() is None,  # pylint: disable=protected-access
                    reason='needs glibc malloc without MALLOC_* settings')
def test_threads_started_after_import_reuse_freed_blocks():
  # A thread's own arena serves a block too large for its 64 MiB heaps with
  # mmap whatever the settings; `import dcgan` makes new threads use the main
  # arena instead. Fresh interpreters: threads this one started earlier may
  # hold arenas of their own.
  def faults(mode):
    result = subprocess.run([sys.executable, '-c', _THREAD_FAULTS, mode,
                             str(SIZE)], capture_output=True, text=True,
                            check=True)
    return int(result.stdout.split()[-1])
  pages = SIZE // resource.getpagesize()
  assert faults('plain') > pages // 2
  assert faults('dcgan') < pages // 100


def test_user_malloc_settings_are_left_alone(monkeypatch):
  monkeypatch.setenv('MALLOC_MMAP_MAX_', '0')
  assert heap._glibc() is None  # pylint: disable=protected-access
  assert not heap.share_main_arena()
  with heap.reuse_freed_memory():
    pass


@pytest.mark.skipif(sys.platform.startswith('linux'),
                    reason='Linux has glibc; this checks the others')
def test_other_platforms_do_nothing():
  assert heap._glibc() is None  # pylint: disable=protected-access
