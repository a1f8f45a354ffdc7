"""Fixed-seed PyTorch fixtures shared by the parity tests."""

import math

import numpy as np
import torch
from torch import nn


def randomize_(module: nn.Module, seed: int) -> nn.Module:
  """Redraws every parameter and BN statistic from a seeded generator, in place.

  Zero- and one-initialised values (BN bias, running mean and variance) are randomised
  too; otherwise a parity check of them would be vacuous.
  """
  generator = torch.Generator().manual_seed(seed)

  def draw(shape, low=None, high=None, std=None):
    if std is not None:
      return torch.randn(shape, generator=generator, dtype=torch.float64) * std
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

  with torch.no_grad():
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
      if name.endswith('num_batches_tracked'):
        continue
      if name.endswith('running_var'):
        value = draw(tensor.shape, 0.5, 2.0)
      elif name.endswith('running_mean') or (tensor.ndim == 1 and name.endswith('bias')):
        value = draw(tensor.shape, std=0.1)
      elif tensor.ndim == 1:  # Norm scales.
        value = draw(tensor.shape, 0.5, 1.5)
      else:  # Conv and linear weights: torch's default scale, fan-in.
        fan_in = math.prod(tensor.shape[1:])
        value = draw(tensor.shape, std=1.0 / math.sqrt(fan_in))
      tensor.copy_(value.to(tensor.dtype))
  return module


def numpy_state_dict(module: nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()
          if not k.endswith('num_batches_tracked')}


def to_nchw(images: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def to_nhwc(tensor: torch.Tensor) -> np.ndarray:
  return tensor.detach().cpu().numpy().transpose(0, 2, 3, 1)


def assert_close_to_scale(reference, candidate, rtol: float, name: str = '') -> None:
  """max|candidate - reference| <= rtol * max|reference|."""
  reference = np.asarray(reference, np.float64)
  candidate = np.asarray(candidate, np.float64)
  assert reference.shape == candidate.shape, (name, reference.shape, candidate.shape)
  scale = np.max(np.abs(reference))
  diff = np.max(np.abs(reference - candidate))
  assert scale > 0, f'{name}: the reference is all zeros; the check would be vacuous'
  assert diff <= rtol * scale, f'{name}: max|diff| {diff:.3g} > {rtol:g} x scale {scale:.3g}'
