"""Tests of dcgan.eval.heap: freed memory kept for reuse under glibc."""

import resource
import sys

import numpy as np
import pytest

from dcgan.eval import heap

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


def test_user_malloc_settings_are_left_alone(monkeypatch):
  monkeypatch.setenv('MALLOC_MMAP_MAX_', '0')
  assert heap._glibc() is None  # pylint: disable=protected-access
  with heap.reuse_freed_memory():
    pass


@pytest.mark.skipif(sys.platform.startswith('linux'),
                    reason='Linux has glibc; this checks the others')
def test_other_platforms_do_nothing():
  assert heap._glibc() is None  # pylint: disable=protected-access
