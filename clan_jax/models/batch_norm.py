"""Train-mode BatchNorm with a hand-written VJP (model.bn_impl='custom_vjp'; docs/MODEL.md).

The same function as layers.BatchNorm's two-pass form, in fewer passes over the activation:
- forward: the statistics in one pass, sums of x - c and (x - c)^2 with c a per-channel
  shift, mean = c + s1/N, biased var = s2/N - (s1/N)^2. c is the batch's first value of
  each channel: a value from the batch's own distribution, so the difference does not
  cancel (the running mean, stale for a new layer or after a change of data, made float32
  gradients 12x less accurate: docs/MODEL.md). The outputs do not depend on c in exact
  arithmetic: it is a constant for differentiation.
- residuals: x as given, and per channel the mean and 1/std (with scale, bias and the
  residual input where the ReLU mask must be recomputed); no normalised copy of x.
- backward: x_hat (and the ReLU mask) recomputed elementwise, one multi-output reduction
  (sum of g and of g * x_hat per channel), then one elementwise pass for dx.
A block's end, relu(bn(x) + residual), and relu(bn(x)) are fused into the same function.
Pure functions of arrays (no flax): clan_jax.models.layers.BatchNorm calls them.
"""

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp


def compute_dtype(x: jax.Array):
  """float32 at least (float64 stays float64): layers.compute_dtype, which imports this."""
  return jnp.promote_types(x.dtype, jnp.float32)


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array,
                     residual: Optional[jax.Array] = None, *, epsilon: float = 1e-5,
                     relu: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(y, mean, var) of a train-mode BatchNorm over every axis but the last (channels).

  y = [relu](scale * (x - mean) / sqrt(var + epsilon) + bias [+ residual]) in x's dtype
  (or the type of x + residual); mean and the biased var are per channel, in the compute
  dtype (float32 at least). The VJP is exact for every output, the statistics included.
  """
  dtype = compute_dtype(x)  # The per-channel operands too: their cotangents' dtype.
  return _batch_norm(x, scale.astype(dtype), bias.astype(dtype), residual, epsilon, relu)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _batch_norm(x, scale, bias, residual, epsilon, relu):
  return _forward(x, scale, bias, residual, epsilon, relu)[0]


def _reduced_axes(x: jax.Array) -> tuple[tuple[int, ...], int]:
  return tuple(range(x.ndim - 1)), math.prod(x.shape[:-1])


def _pre_activation(x_hat, scale, bias, residual):
  """scale * x_hat + bias [+ residual] in the compute dtype: the forward's output before
  the ReLU, and the backward's ReLU mask (the same expression)."""
  y = x_hat * scale + bias
  return y if residual is None else y + residual.astype(y.dtype)


def _forward(x, scale, bias, residual, epsilon, relu):
  dtype = compute_dtype(x)
  axes, count = _reduced_axes(x)
  shift = x[(0,) * len(axes)].astype(dtype)  # The first value of each channel.
  centred = x.astype(dtype) - shift
  # One pass: both sums read the same input (XLA fuses them into one reduction).
  shifted_mean = jnp.sum(centred, axes) / count
  mean_of_squares = jnp.sum(jnp.square(centred), axes) / count
  # Rounding alone could make the difference negative; exact arithmetic never does.
  var = jnp.maximum(mean_of_squares - jnp.square(shifted_mean), 0)
  mean = shift + shifted_mean
  inv = jax.lax.rsqrt(var + epsilon)
  y = _pre_activation((x.astype(dtype) - mean) * inv, scale, bias, residual)
  if relu:
    y = jnp.maximum(y, 0)
  out_dtype = x.dtype if residual is None else jnp.result_type(x, residual)
  # The residual input itself only for the mask; otherwise a zero-size stand-in that
  # carries its dtype (the cotangent's).
  if residual is not None and not relu:
    residual = jnp.zeros((0,), residual.dtype)
  saved = (x, mean, inv, scale, bias if relu else None, residual)
  return (y.astype(out_dtype), mean, var), saved


def _backward(epsilon, relu, saved, cotangents):
  del epsilon  # 1/std is saved.
  x, mean, inv, scale, bias, residual = saved
  grad, grad_mean, grad_var = cotangents
  dtype = compute_dtype(x)
  axes, count = _reduced_axes(x)
  x_hat = (x.astype(dtype) - mean) * inv
  grad = grad.astype(dtype)
  if relu:
    mask = _pre_activation(x_hat, scale, bias, residual) > 0
    grad = jnp.where(mask, grad, 0)
  # One multi-output reduction over the activation.
  grad_bias = jnp.sum(grad, axes)
  grad_scale = jnp.sum(grad * x_hat, axes)
  # dx = scale*inv/N (N g - sum g - x_hat sum(g x_hat))
  #      + grad_mean/N + grad_var 2 (x - mean)/N, with x - mean = x_hat / inv:
  # per-channel coefficients, then one elementwise pass.
  gain = scale * inv
  x_hat_coefficient = (2 * grad_var / inv - gain * grad_scale) / count
  offset = (grad_mean - gain * grad_bias) / count
  grad_x = gain * grad + x_hat_coefficient * x_hat + offset
  grad_residual = None if residual is None else grad.astype(residual.dtype)
  return grad_x.astype(x.dtype), grad_scale, grad_bias, grad_residual


_batch_norm.defvjp(_forward, _backward)
