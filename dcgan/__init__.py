"""DCGANs for cartoon and anime faces in JAX/Flax."""

from dcgan import heap as _heap

# Before any JAX computation starts XLA's threads: their large per-call
# buffers then come from the main arena, which `heap.reuse_freed_memory`
# keeps mapped between calls.
_heap.share_main_arena()
