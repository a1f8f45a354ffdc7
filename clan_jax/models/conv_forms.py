"""Convolutions in other forms for speed: each the function and the parameters of `layers.conv`
(names, shapes, initialisation), chosen by a model field (docs/MODEL.md, BENCHMARKS.md).

- `stem_conv`: the 7x7 stem with the image zero-padded to 4 or 8 channels and the kernel
  zero-padded to match at apply time (model.stem_channels); the parameter keeps
  torchvision's (7, 7, 3, 64), so checkpoints and conversion are untouched.
- `downsample_conv`: the strided 1x1 of a block's shortcut as a matrix product after a
  strided slice, or as a strided convolution (model.downsample_impl).
- `clsa_conv`: CLSA's 7x7 two-to-one-channel convolution as nn.Conv, as a sum of 49
  shifted slices times the kernel's entries ('taps'), or as one product of its 98-wide
  patches ('im2col') (model.clsa_impl).
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from clan_jax.models.layers import conv, conv_kernel_init, uniform_init

Dtype = Any

STEM_CHANNELS = (3, 4, 8)
DOWNSAMPLE_IMPLS = ('slice_matmul', 'conv')
CLSA_IMPLS = ('conv', 'taps', 'im2col')
CLSA_KERNEL = 7


def _check_form(value: Any, allowed: tuple, field: str) -> None:
  # 'auto' is resolved per platform by create_model (models/factory.py), not here.
  if isinstance(value, bool) or value not in allowed:
    raise ValueError(f'{field}={value!r}; allowed here: {", ".join(map(repr, allowed))} '
                     "('auto' is resolved by create_model).")


def stem_conv(channels: int, *, dtype: Optional[Dtype] = None,
              name: Optional[str] = None) -> nn.Module:
  """ResNet's stem: 64 features, 7x7, stride 2, padding 3, no bias; the input taken as
  `channels` channels (3: nn.Conv as `layers.conv`)."""
  _check_form(channels, STEM_CHANNELS, 'stem_channels')
  if channels == 3:
    return conv(64, 7, 2, dtype=dtype, name=name)
  return ChannelPaddedConv(64, 7, 2, channels, dtype=dtype, name=name)


class ChannelPaddedConv(nn.Module):
  """`layers.conv(features, kernel_size, stride)` (no bias) with the input zero-padded to
  `channels` channels and the kernel to as many input channels: zeros times zeros add
  nothing, so the function and the parameter ('kernel' (k, k, in, features)) are the
  3-channel convolution's. A GPU's convolution kernels want 4 or 8 input channels."""
  features: int
  kernel_size: int
  stride: int
  channels: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    if in_features > self.channels:
      raise ValueError(f'channels={self.channels} is fewer than the input\'s {in_features}.')
    shape = (self.kernel_size, self.kernel_size, in_features, self.features)
    kernel = self.param('kernel', conv_kernel_init, shape, jnp.float32)
    dtype = self.dtype or jnp.result_type(x, kernel)
    extra = self.channels - in_features
    x = jnp.pad(x.astype(dtype), ((0, 0), (0, 0), (0, 0), (0, extra)))
    kernel = jnp.pad(kernel.astype(dtype), ((0, 0), (0, 0), (0, extra), (0, 0)))
    pad = self.kernel_size // 2
    return jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride),
                                        ((pad, pad), (pad, pad)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def downsample_conv(features: int, stride: int, impl: str, *, as_matmul: bool,
                    dtype: Optional[Dtype] = None, name: Optional[str] = None) -> nn.Module:
  """The shortcut's 1x1: with `as_matmul` (model.conv1x1_as_matmul) a strided one is
  PointwiseConv (a strided slice, then a dot) with impl 'slice_matmul', a strided nn.Conv
  with 'conv' (a strided slice feeding a Triton GEMM aborted XLA's GPU compiler with remat
  at batch 128, openxla/xla#47381); the same parameter (kernel (1, 1, in, out)) either way.
  Without a stride there is no slice: a dot with `as_matmul`, whatever `impl`."""
  _check_form(impl, DOWNSAMPLE_IMPLS, 'downsample_impl')
  as_matmul = as_matmul and (impl == 'slice_matmul' or stride == 1)
  return conv(features, 1, stride, dtype=dtype, as_matmul=as_matmul, name=name)


def clsa_conv(impl: str, *, dtype: Optional[Dtype] = None,
              name: Optional[str] = None) -> nn.Module:
  """CLSA's 7x7 convolution of the [mean, max] map to one channel, with a bias and torch's
  default init, in the form `impl` names ('conv': nn.Conv as `layers.conv`)."""
  _check_form(impl, CLSA_IMPLS, 'clsa_impl')
  if impl == 'conv':
    return conv(1, CLSA_KERNEL, in_features=2, dtype=dtype, name=name)
  return UnrolledConv(1, CLSA_KERNEL, impl, dtype=dtype, name=name)


class UnrolledConv(nn.Module):
  """`layers.conv(features, kernel_size, in_features=<input channels>)` (stride 1, padding
  kernel_size // 2, a bias) for a few channels, without a convolution op: 'taps' (`taps_conv`)
  sums the kernel_size**2 shifted slices of the padded input's channel planes times the
  kernel's entries, elementwise; 'im2col' concatenates the slices into patches
  (kernel_size**2 * in wide) and multiplies them by the kernel as a matrix. The sums run in
  float32 at least; the output has the compute dtype."""
  features: int
  kernel_size: int
  impl: str = 'taps'
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    size, in_features = self.kernel_size, x.shape[-1]
    init = uniform_init(1.0 / math.sqrt(size * size * in_features))  # torch's Conv2d default.
    kernel = self.param('kernel', init, (size, size, in_features, self.features), jnp.float32)
    bias = self.param('bias', init, (self.features,), jnp.float32)
    dtype = self.dtype or jnp.result_type(x, kernel)
    sum_dtype = jnp.promote_types(dtype, jnp.float32)
    x, kernel, bias = (a.astype(sum_dtype) for a in (x, kernel, bias))
    if self.impl == 'taps':
      y = taps_conv(x, kernel)
    elif self.impl == 'im2col':
      y = jnp.dot(jnp.concatenate(list(_shifted(x, size)), axis=-1),  # (i, j, c): the kernel's
                  kernel.reshape(-1, self.features))                  # order of entries.
    else:
      raise ValueError(f"impl={self.impl!r}; allowed: 'taps', 'im2col'.")
    return (y + bias).astype(dtype)


def _shifted(x: jax.Array, size: int, *, planes: bool = False):
  """The size**2 windows of x (NHWC) zero-padded by size // 2, in (i, j) order: (B, H, W, C)
  each, or channel planes (C, B, H, W) with `planes` (W then the contiguous axis)."""
  pad, (height, width) = size // 2, x.shape[1:3]
  if planes:
    x = jnp.pad(jnp.moveaxis(x, -1, 0), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return [x[:, :, i:i + height, j:j + width] for i in range(size) for j in range(size)]
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return [x[:, i:i + height, j:j + width, :] for i in range(size) for j in range(size)]


def _taps_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
  size, in_features, features = kernel.shape[1:]  # kernel (size, size, in, out).
  windows = _shifted(x, size, planes=True)
  weights = kernel.reshape(size * size, in_features, features)
  return jnp.stack([sum(window[c] * weight[c, o] for window, weight in zip(windows, weights)
                        for c in range(in_features)) for o in range(features)], axis=-1)


@jax.custom_vjp
def taps_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The stride-1 'same' correlation of x (NHWC) with kernel (HWIO) as a sum of shifted
  slices times scalars. Autodiff would give the kernel's gradient as size**2 * in * out
  separate reductions into which XLA fuses the forward again: a minute of compilation on
  the CPU for a 7x7. Here the input's gradient is the same sum with the kernel flipped and
  the kernel's one reduction of the stacked windows times the output's gradient."""
  return _taps_forward(x, kernel)


def _taps_conv_forward(x, kernel):
  return _taps_forward(x, kernel), (x, kernel)


def _taps_conv_backward(residuals, grad):
  x, kernel = residuals
  size = kernel.shape[0]
  grad_x = _taps_forward(grad, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  windows = jnp.stack(_shifted(x, size, planes=True))  # (size**2, in, B, H, W)
  grad_planes = jnp.moveaxis(grad, -1, 0)  # (out, B, H, W)
  grad_kernel = jnp.sum(windows[:, :, None] * grad_planes[None, None], axis=(3, 4, 5))
  return grad_x, grad_kernel.reshape(kernel.shape)


taps_conv.defvjp(_taps_conv_forward, _taps_conv_backward)
