"""DCGANs for cartoon and anime faces in JAX/Flax."""

from dcgan import heap as _heap

# Before JAX creates its CPU client: each computation then runs on the
# calling thread, and its large buffers come from the main arena, which
# `heap.reuse_freed_memory` keeps mapped between calls.
_heap.compute_on_calling_thread()
