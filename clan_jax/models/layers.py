"""Layers that reproduce PyTorch's numerics and initialisation (docs/MODEL.md, numerical traps)."""

import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from clan_jax.models.batch_norm import batch_norm_train, compute_dtype

Dtype = Any
BN_IMPLS = ('two_pass', 'custom_vjp')  # model.bn_impl once 'auto' is resolved.

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'): an untruncated normal
# ('normal' here; 'truncated_normal' would differ).
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def uniform_init(bound: float) -> Callable:
  """U(-bound, bound), torch's default for Linear weights and biases with bound 1/sqrt(fan_in)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _conv_inits(kernel: int, in_features: Optional[int]) -> tuple[Callable, Callable]:
  """(kernel_init, bias_init): torch's default Conv2d init with `in_features` (a biased conv),
  else torchvision's kaiming-normal fan-out and no bias (a conv followed by BatchNorm)."""
  if in_features is None:
    return conv_kernel_init, nn.initializers.zeros
  init = uniform_init(1.0 / math.sqrt(kernel * kernel * in_features))
  return init, init


def conv(features: int, kernel: int, stride: int = 1, *, in_features: Optional[int] = None,
         dtype: Optional[Dtype] = None, as_matmul: bool = False,
         name: Optional[str] = None) -> nn.Module:
  """A square convolution with torch's explicit symmetric padding (kernel // 2).

  Flax's 'SAME' would pad a stride-2 layer (0, 1) where torch pads (1, 1).
  Without `in_features`: no bias and torchvision's kaiming-normal fan-out init (every
  conv followed by BatchNorm). With `in_features`: a bias, and torch's default Conv2d
  init for weight and bias, U(+-1/sqrt(fan_in)). `as_matmul=True` computes a 1x1
  convolution as a matrix product (PointwiseConv: the same parameters).
  """
  pad = kernel // 2
  use_bias = in_features is not None
  kernel_init, bias_init = _conv_inits(kernel, in_features)
  if kernel == 1 and as_matmul:
    return PointwiseConv(features, stride, use_bias=use_bias, dtype=dtype,
                         kernel_init=kernel_init, bias_init=bias_init, name=name)
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=kernel_init, bias_init=bias_init,
                 name=name)


def pointwise_weights(features: int, *, in_features: Optional[int] = None,
                      name: Optional[str] = None) -> nn.Module:
  """The parameters `conv(features, 1, in_features=..., name=...)` would create, returned
  (called with the input's channel count) as a matrix (in, out) and a bias or None,
  for computations that fold the projection into other products."""
  kernel_init, bias_init = _conv_inits(1, in_features)
  return PointwiseWeights(features, use_bias=in_features is not None,
                          kernel_init=kernel_init, bias_init=bias_init, name=name)


def _pointwise_params(module: nn.Module, in_features: int, features: int, use_bias: bool,
                      kernel_init: Callable, bias_init: Callable):
  """nn.Conv's 1x1 parameters (kernel (1, 1, in, out), bias (out,)) as (matrix, bias or None)."""
  kernel = module.param('kernel', kernel_init, (1, 1, in_features, features), jnp.float32)
  bias = module.param('bias', bias_init, (features,), jnp.float32) if use_bias else None
  return kernel.reshape(in_features, features), bias


class PointwiseConv(nn.Module):
  """A 1x1 convolution as a matrix product over the channel axis; nn.Conv's parameters
  (kernel (1, 1, in, out), bias) and initialisation. A stride subsamples first (a 1x1
  window has no padding). XLA:CPU runs a dot's backward faster than a 1x1 convolution's,
  and the H100 a little faster too (the figures: BENCHMARKS.md, model.conv1x1_as_matmul)."""
  features: int
  stride: int = 1
  use_bias: bool = False
  dtype: Optional[Dtype] = None
  kernel_init: Callable = conv_kernel_init
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel, bias = _pointwise_params(self, x.shape[-1], self.features, self.use_bias,
                                     self.kernel_init, self.bias_init)
    if self.stride > 1:
      x = x[:, ::self.stride, ::self.stride, :]
    dtype = self.dtype or jnp.result_type(x, kernel)
    y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype),
                            (((x.ndim - 1,), (0,)), ((), ())))
    if bias is not None:
      y = y + bias.astype(dtype)
    return y


class PointwiseWeights(nn.Module):
  """A 1x1 convolution's parameters, not applied (see `pointwise_weights`)."""
  features: int
  use_bias: bool = False
  kernel_init: Callable = conv_kernel_init
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, Optional[jax.Array]]:
    return _pointwise_params(self, in_features, self.features, self.use_bias,
                             self.kernel_init, self.bias_init)


class BatchNorm(nn.Module):
  """BatchNorm with torch's semantics, optionally followed by `+ residual` and a ReLU.

  Normalises with the biased batch variance but updates the running variance with
  the unbiased one (x n/(n-1)), like torch.nn.BatchNorm2d; `momentum` is Flax's
  convention (0.9 here = torch's 0.1). Statistics run in float32 whatever the input
  dtype; the output has the input's dtype. Under jit with a batch sharded over
  devices the statistics are over the global batch (like SyncBatchNorm).
  `impl` (model.bn_impl) computes train mode either as jnp ops differentiated by JAX
  ('two_pass') or as batch_norm.batch_norm_train ('custom_vjp': one-pass shifted
  statistics, a hand-written backward, the add and ReLU fused); eval mode is the same.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  scale_init: Callable = nn.initializers.ones
  impl: str = 'two_pass'
  relu: bool = False  # relu(bn(x) [+ residual]): a ResNet block's end.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool,
               residual: Optional[jax.Array] = None) -> jax.Array:
    if self.impl not in BN_IMPLS:
      raise ValueError(f'impl={self.impl!r}; allowed: {", ".join(BN_IMPLS)} '
                       "(model.bn_impl='auto' is resolved by create_model).")
    features = x.shape[-1]
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    count = math.prod(x.shape[:-1])
    if train and count < 2:
      raise ValueError(f'BatchNorm in train mode needs more than one value per channel; '
                       f'got input shape {x.shape}. Use a larger batch or train=False.')
    if train and self.impl == 'custom_vjp':
      y, mean, var = batch_norm_train(x, scale, bias, residual, epsilon=self.epsilon,
                                      relu=self.relu)
      self._update_running_statistics(running_mean, running_var, mean, var, count)
      return y
    stats_dtype = compute_dtype(x)
    x_stats = x.astype(stats_dtype)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x_stats, axes)
      var = jnp.mean(jnp.square(x_stats - mean), axes)  # Biased, two-pass (no fast variance).
      self._update_running_statistics(running_mean, running_var, mean, var, count)
    else:
      mean, var = running_mean.value, running_var.value
    inv = scale.astype(stats_dtype) * jax.lax.rsqrt(var.astype(stats_dtype) + self.epsilon)
    y = (x_stats - mean.astype(stats_dtype)) * inv + bias.astype(stats_dtype)
    y = y.astype(x.dtype)
    if residual is not None:
      y = y + residual
    return nn.relu(y) if self.relu else y

  def _update_running_statistics(self, running_mean, running_var, mean, var, count):
    if not self.is_initializing():
      m = self.momentum
      running_mean.value = m * running_mean.value + (1 - m) * mean
      running_var.value = m * running_var.value + (1 - m) * var * (count / (count - 1))


class Linear(nn.Module):
  """A dense layer with torch.nn.Linear's initialisation, computed in `dtype` (None: inferred).

  `zero_init=True` starts it at zero (weights and bias): a residual branch that is the
  identity at initialisation.
  """
  features: int
  dtype: Optional[Dtype] = None
  zero_init: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    init = nn.initializers.zeros if self.zero_init else uniform_init(1.0 / math.sqrt(fan_in))
    kernel = self.param('kernel', init, (fan_in, self.features), jnp.float32)
    bias = self.param('bias', init, (self.features,), jnp.float32)
    dtype = self.dtype or jnp.result_type(x, kernel)
    return jnp.dot(x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: int, stride: int, padding: int) -> jax.Array:
  """torch's MaxPool2d (NHWC, -inf padding): the same values and gradient as nn.max_pool
  (the first maximum of a window takes the gradient, as in torch), computed from
  window**2 strided slices. The backward keeps only the index of each window's winner
  and adds window**2 padded selects: XLA:CPU's select-and-scatter (nn.max_pool's
  backward) was several times slower (BENCHMARKS.md).
  """
  return _max_pool_forward(x, window, stride, padding)[0]


def _pool_taps(x: jax.Array, window: int, stride: int, padding: int):
  """(offset (i, j), strided slice) of the -inf-padded input for each window position."""
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  padded = jnp.pad(x, pad, constant_values=-jnp.inf)
  out_h = (padded.shape[1] - window) // stride + 1
  out_w = (padded.shape[2] - window) // stride + 1
  for i in range(window):
    for j in range(window):
      end = (x.shape[0], i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1, x.shape[3])
      yield (i, j), jax.lax.slice(padded, (0, i, j, 0), end, (1, stride, stride, 1))


def _max_pool_forward(x, window, stride, padding):
  result, winner = None, None
  for index, (_, tap) in enumerate(_pool_taps(x, window, stride, padding)):
    if result is None:
      result, winner = tap, jnp.zeros(tap.shape, jnp.int8)
    else:
      better = tap > result  # Strict: an earlier maximum keeps the gradient.
      result = jnp.where(better, tap, result)
      winner = jnp.where(better, jnp.int8(index), winner)
  return result, (winner, x.shape)


def _max_pool_backward(window, stride, padding, residuals, grad):
  winner, shape = residuals
  padded = (shape[1] + 2 * padding, shape[2] + 2 * padding)
  total = None
  for index in range(window * window):
    i, j = divmod(index, window)
    routed = jnp.where(winner == index, grad, jnp.zeros((), grad.dtype))
    # The transpose of the strided slice at (i, j): interior padding spreads it back.
    config = ((0, 0, 0),
              (i, padded[0] - i - stride * (grad.shape[1] - 1) - 1, stride - 1),
              (j, padded[1] - j - stride * (grad.shape[2] - 1) - 1, stride - 1),
              (0, 0, 0))
    spread = jax.lax.pad(routed, jnp.zeros((), grad.dtype), config)
    total = spread if total is None else total + spread
  return (total[:, padding:padding + shape[1], padding:padding + shape[2], :],)


max_pool.defvjp(_max_pool_forward, _max_pool_backward)
