"""Keeping freed memory for reuse on CPU (glibc malloc).

glibc serves every block over 32 MiB with a fresh mmap and unmaps it when
freed, and the arenas of threads other than the main one serve blocks too
large for their 64 MiB heaps the same way whatever the settings. XLA:CPU and
PyTorch allocate such blocks on every call: an Inception batch of 64 images
needs gigabytes of them (one 147x147x64 float32 activation alone is 354 MB),
and a transposed convolution of the generator on 500 latents writes a 461 MB
column matrix. So the kernel maps and zeroes new pages for every layer of
every batch: a quarter of the CPU time of feature extraction on a 2-core VM.

* `compute_on_calling_thread()` (called when `dcgan` is imported) turns off
  JAX's asynchronous dispatch on CPU, so that XLA runs each computation on
  the thread that calls it, in dcgan's programs Python's main thread, whose
  arena is glibc's main arena: the computation's large blocks (one for all
  its temporaries, 405 MB in the fp32 reference training step) come from
  the heap that the next setting keeps. XLA's worker threads keep arenas of
  their own for their small scratch blocks.
* `to_device()` copies host data in and waits: a computation whose inputs
  are still being copied runs on another thread once they arrive, like a
  dispatched one. The training loop and batched sampling feed it so.
* inside `reuse_freed_memory()` blocks come from the heap and freed ones stay
  there, so later batches reuse pages that are already mapped (measured:
  Inception features 12.6 -> 15.6 images per 2 CPU-seconds; generating 500
  samples at a time ~1.2x faster, see benchmarks/generation.py; the fp32
  reference training step 43.9 -> 49.0 img/s). The training loop, sampling
  and feature extraction run inside it.

Why not every thread in the main arena (what this module did before): the
worker threads allocate ~4,700 scratch blocks of 64-512 KB per reference
step (GEMM packing buffers), and in the main arena each one searched free
lists that compiling the step had left ~70,000 chunks long, under the
arena's one lock: 5% of the step's CPU time in malloc, and ~900 context
switches a step against ~240 now. With dispatch on the calling thread and
worker arenas of their own, the training step ran 1.07x and 1.10x faster
in fp32 (70.5 -> 77.8 img/s) and 1.15x in bf16 (142 -> 164), generation
1.02x (paired worker processes, medians of 12-16 rounds); the fp32 step's
peak RSS fell from 2.2 to 1.6 GiB. Own arenas alone gained nothing
(0.995x): with asynchronous dispatch a JAX thread with an arena of its own
runs the computation and maps its 405 MB afresh every step (~100,000 page
faults). Nor did the calling thread alone, with the arena shared. The free
lists were that long because the process had compiled the step: a training
run that loads it from the compilation cache (`dcgan.compile_cache`) ran
as fast before the change as after (steps 80-160: 76.8 and 79.6 img/s
before, 74.8 and 79.6 after), one that compiles it 68.5 before, 77.7 after.

On leaving, the settings become those glibc's adaptive thresholds reach in a
long-running process (blocks up to 32 MiB from the heap, 64 MiB of free heap
kept), and the heap's free memory goes back to the system. Elsewhere than
glibc, or when the user set malloc's environment variables,
`compute_on_calling_thread` and `reuse_freed_memory` do nothing. A program that wants asynchronous dispatch back sets
`jax.config.update('jax_cpu_enable_async_dispatch', True)` after importing
dcgan and before its first computation.
"""

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import jax

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_KEEP_ALL = 2**31 - 1  # the largest trim threshold: never trim
_AFTER_MMAP_THRESHOLD = 32 << 20  # glibc's adaptive maximum (64-bit)
_AFTER_TRIM_THRESHOLD = 2 * _AFTER_MMAP_THRESHOLD  # as the adaptive rule
_DEFAULT_MMAP_MAX = 65536
_USER_SETTINGS = ('MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_',
                  'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TOP_PAD_',
                  'MALLOC_ARENA_MAX')

_lock = threading.Lock()
_depth = 0


def _glibc():
  """glibc's C library with mallopt, or None (other platforms, user env)."""
  if not sys.platform.startswith('linux'):
    return None
  if (any(name in os.environ for name in _USER_SETTINGS) or
      'glibc.malloc' in os.environ.get('GLIBC_TUNABLES', '')):
    return None  # the user tuned malloc: leave it alone
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement
    return libc if hasattr(libc, 'mallopt') else None
  except (OSError, AttributeError):
    return None


def compute_on_calling_thread() -> bool:
  """XLA:CPU runs computations on the calling thread; True if it was set.

  Sets `jax_cpu_enable_async_dispatch` to False, which JAX reads once, when
  it creates its CPU client (the first computation or device query), so this
  must run before that. Only under glibc, whose arenas are the reason.
  """
  if _glibc() is None:
    return False
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  return True


def to_device(tree: Any, sharding: Any = None) -> Any:
  """`jax.device_put(tree, sharding)`, returned once the copy is done.

  A computation whose inputs are still being copied from the host waits for
  them on another thread and runs there, not on the calling thread, and
  takes its large blocks from that thread's arena, mapped afresh on every
  call (`compute_on_calling_thread`); so does one given host arrays, which
  jit copies the same way. The training loop fed by `jax.device_put` alone
  faulted in ~98,000 pages a step and ran 0.92-0.97x as fast as with every
  thread in the main arena (the code before; logged rates over 120-160
  steps).
  """
  return jax.block_until_ready(jax.device_put(tree, sharding))


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
  """Within: large blocks come from the heap, and freed ones are kept."""
  global _depth
  libc = _glibc()
  if libc is None:
    yield
    return
  with _lock:
    _depth += 1
    if _depth == 1:
      libc.mallopt(_M_MMAP_MAX, 0)
      libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL)
  try:
    yield
  finally:
    with _lock:
      _depth -= 1
      if _depth == 0:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM_THRESHOLD)
        libc.malloc_trim(0)
