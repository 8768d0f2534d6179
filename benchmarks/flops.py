"""FLOPs of the DCGAN's layers, shared by the benchmarks.

Counting rule: 2 x multiply-adds of the conv and dense layers that a step
runs. A forward pass counts 1x; a backward pass 2x (input and weight
gradients), or 1x through D in a G update (D's weights are held fixed there,
so only input gradients are computed). Layers count densely, taps that
read zero padding included, which `dcgan.layers` skips in its smallest
layers (as PyTorch's oneDNN convolutions do): the rule is the same
yardstick for both, not the multiplications either runs.
"""


def forward_flops(config) -> tuple[float, float]:
  """FLOPs of one G and one D forward pass on a batch (2 x multiply-adds)."""
  b, s, k = config.batch_size, config.image_size, config.model.kernel_size
  gf, df = config.model.g_base_features, config.model.d_base_features
  s16 = s // 16
  g = 2 * b * config.latent_dim * s16 * s16 * 8 * gf
  widths = [8 * gf, 4 * gf, 2 * gf, gf, 3]
  for i in range(4):  # a transposed conv: every input pixel meets the kernel
    h_in = s16 * 2**i
    g += 2 * b * h_in * h_in * k * k * widths[i] * widths[i + 1]
  d = 0
  widths = [3, df, 2 * df, 4 * df, 8 * df]
  for i in range(4):  # a strided conv: every output pixel meets the kernel
    h_out = s // 2**(i + 1)
    d += 2 * b * h_out * h_out * k * k * widths[i] * widths[i + 1]
  d += 2 * b * s16 * s16 * 8 * df
  return g, d


def iteration_flops(config) -> float:
  """FLOPs of one training step: 1 D update, then g_steps_per_d_step G updates.

  The D update: G forward, D forward and backward on a real and a fake batch
  (1 G + 6 D). Each G update: G forward and backward, D forward and an
  input-gradient backward (3 G + 2 D), except that with g_reuse_latents the
  first G update reuses the D update's G forward (`dcgan.train.Updates`).
  At the reference recipe this is 187.2 GFLOP per step of 64 images; XLA's
  `cost_analysis()` of the compiled step said 187.4 (it also counts the
  elementwise work) while every layer multiplied its padding; the step's
  dots now run 153.2 (benchmarks/gemm_floor.py).
  """
  g, d = forward_flops(config)
  n = config.g_steps_per_d_step
  g_passes = 3 * n + (0 if config.g_reuse_latents else 1)
  return g_passes * g + (6 + 2 * n) * d
