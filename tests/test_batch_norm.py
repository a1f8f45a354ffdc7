"""batch_norm.batch_norm_train (model.bn_impl='custom_vjp'): the two-pass BatchNorm's and
torch's function and gradients in float64, float32 as accurate as the two-pass form, a
shift that keeps the one-pass statistics accurate far from zero, exact VJPs of the
statistics themselves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from clan_jax.models.batch_norm import batch_norm_train
from clan_jax.models.layers import BatchNorm
from helpers.torch_helpers import assert_close_to_scale, to_nchw, to_nhwc

SHAPE = (3, 4, 5, 6)  # NHWC: 60 values per channel.
FORMS = {'plain': (False, False), 'relu': (True, False), 'residual_relu': (True, True)}


def _arrays(seed=0, offset=1.0):
  rng = np.random.default_rng(seed)
  channels = SHAPE[-1]
  return {'x': rng.standard_normal(SHAPE) * 2 + offset,
          'residual': rng.standard_normal(SHAPE),
          'cotangent': rng.standard_normal(SHAPE),
          'scale': rng.uniform(0.5, 1.5, channels), 'bias': rng.standard_normal(channels) * 0.5,
          'mean': rng.standard_normal(channels) * 0.1 + offset,
          'var': rng.uniform(0.5, 2.0, channels)}


def _variables(a):
  return {'params': {'scale': jnp.asarray(a['scale']), 'bias': jnp.asarray(a['bias'])},
          'batch_stats': {'mean': jnp.asarray(a['mean']), 'var': jnp.asarray(a['var'])}}


def _flax_train_step(impl, relu, with_residual, a):
  """(y, running mean, running var, {x, scale, bias, residual: gradient of sum(y * g)})."""
  module = BatchNorm(impl=impl, relu=relu)
  variables = _variables(a)
  residual = jnp.asarray(a['residual']) if with_residual else None

  def loss(x, params, residual):
    y, updates = module.apply({**variables, 'params': params}, x, True, residual,
                              mutable=['batch_stats'])
    return jnp.sum(y * a['cotangent']), (y, updates['batch_stats'])

  grads, (y, stats) = jax.jit(jax.grad(loss, (0, 1, 2), has_aux=True))(
      jnp.asarray(a['x']), variables['params'], residual)
  gradients = {'x': grads[0], **grads[1], **({'residual': grads[2]} if with_residual else {})}
  return y, stats['mean'], stats['var'], gradients


def _torch_train_step(relu, with_residual, a):
  bn = torch.nn.BatchNorm2d(SHAPE[-1]).double()
  with torch.no_grad():
    for name, key in (('weight', 'scale'), ('bias', 'bias'), ('running_mean', 'mean'),
                      ('running_var', 'var')):
      getattr(bn, name).copy_(torch.from_numpy(a[key]))
  x = to_nchw(a['x']).requires_grad_()
  residual = to_nchw(a['residual']).requires_grad_()
  y = bn(x) + residual if with_residual else bn(x)
  y = torch.relu(y) if relu else y
  (y * to_nchw(a['cotangent'])).sum().backward()
  gradients = {'x': to_nhwc(x.grad), 'scale': bn.weight.grad.numpy(),
               'bias': bn.bias.grad.numpy(), **({'residual': to_nhwc(residual.grad)}
                                                if with_residual else {})}
  return to_nhwc(y), bn.running_mean.numpy(), bn.running_var.numpy(), gradients


@pytest.mark.parametrize('form', list(FORMS))
def test_float64_custom_vjp_matches_the_two_pass_form_and_torch(form):
  relu, with_residual = FORMS[form]
  a = _arrays()
  with jax.enable_x64(True):
    custom = _flax_train_step('custom_vjp', relu, with_residual, a)
    two_pass = _flax_train_step('two_pass', relu, with_residual, a)
  expected = _torch_train_step(relu, with_residual, a)
  for reference in (two_pass, expected):
    for name, want, got in zip(('y', 'running mean', 'running var'), reference, custom):
      assert_close_to_scale(want, got, 1e-9, name)
    assert reference[3].keys() == custom[3].keys()
    for name in reference[3]:
      assert_close_to_scale(reference[3][name], custom[3][name], 1e-9, f'd{name}')
  if relu:  # The mask matters: some outputs are clipped.
    assert 0 < np.mean(np.asarray(custom[0]) == 0) < 1


@pytest.mark.parametrize('form', list(FORMS))
def test_float32_is_as_accurate_as_the_two_pass_form_far_from_the_running_mean(form):
  """A batch far from its running mean (a new layer's is 0; here the mean is 50 standard
  deviations away): float32 within 1e-5 of float64's scale, like the two-pass form."""
  relu, with_residual = FORMS[form]
  a = {**_arrays(1, offset=100.0), 'mean': np.zeros(SHAPE[-1])}
  a32 = {k: v.astype(np.float32) for k, v in a.items()}
  with jax.enable_x64(True):
    reference = _flax_train_step('two_pass', relu, with_residual, a)
  for impl in ('two_pass', 'custom_vjp'):
    result = _flax_train_step(impl, relu, with_residual, a32)
    assert result[0].dtype == jnp.float32
    for name, want, got in zip(('y', 'running mean', 'running var'), reference, result):
      assert_close_to_scale(want, got, 1e-5, f'{impl}: {name}')
    for name in reference[3]:
      assert_close_to_scale(reference[3][name], result[3][name], 1e-5, f'{impl}: d{name}')


def test_eval_mode_is_the_same_code_for_both_forms():
  a = {k: v.astype(np.float32) for k, v in _arrays(2).items()}
  x, residual = jnp.asarray(a['x']), jnp.asarray(a['residual'])
  outputs = [BatchNorm(impl=impl, relu=True).apply(_variables(a), x, False, residual)
             for impl in ('two_pass', 'custom_vjp')]
  np.testing.assert_array_equal(outputs[0], outputs[1])


def test_bfloat16_input_keeps_float32_statistics_and_a_bfloat16_output():
  a = _arrays(3)
  x = jnp.asarray(a['x'], jnp.bfloat16)
  y, updates = jax.jit(lambda x: BatchNorm(impl='custom_vjp', relu=True).apply(
      _variables(a), x, True, x, mutable=['batch_stats']))(x)
  assert y.dtype == jnp.bfloat16 and updates['batch_stats']['var'].dtype == jnp.float32
  grad = jax.jit(jax.grad(lambda x: jnp.sum(batch_norm_train(x, *_per_channel(a))[0])))(x)
  assert grad.dtype == jnp.bfloat16


def _per_channel(a, dtype=jnp.float32):
  return jnp.asarray(a['scale'], dtype), jnp.asarray(a['bias'], dtype)


def test_the_shifted_one_pass_variance_stays_accurate_far_from_zero():
  """x = 1000 + N(0, 1) in float32: one-pass sums of x and x^2 lose the variance to
  cancellation (float32 keeps ~7 digits of E[x^2] ~ 1e6); shifted, they do not."""
  x = (np.random.default_rng(4).standard_normal(SHAPE) + 1e3).astype(np.float32)
  exact = x.astype(np.float64).reshape(-1, SHAPE[-1]).var(axis=0)  # Of the same input.
  var = jax.jit(batch_norm_train)(jnp.asarray(x), *_per_channel(_arrays()))[2]
  assert np.max(np.abs(np.asarray(var, np.float64) - exact) / exact) < 1e-5
  axes = (0, 1, 2)
  unshifted = jax.jit(lambda x: jnp.mean(x * x, axes) - jnp.square(jnp.mean(x, axes)))(x)
  assert np.max(np.abs(np.asarray(unshifted, np.float64) - exact) / exact) > 1e-3


def test_the_outputs_do_not_depend_on_the_shift():
  """The shift is the batch's first value per channel: reordering the batch changes it but
  not the outputs or gradients (float64 rounding)."""
  a = _arrays(5)
  with jax.enable_x64(True):
    x, (scale, bias) = jnp.asarray(a['x']), _per_channel(a, jnp.float64)
    cotangent = jnp.asarray(a['cotangent'])

    @jax.jit
    def forward_and_grad(x, cotangent):
      outputs, vjp = jax.vjp(lambda x: batch_norm_train(x, scale, bias, relu=True), x)
      return outputs, vjp((cotangent, jnp.ones_like(scale), jnp.ones_like(scale)))[0]

    order = np.array([2, 0, 1])
    (y, mean, var), grad = forward_and_grad(x, cotangent)
    (y_r, mean_r, var_r), grad_r = forward_and_grad(x[order], cotangent[order])
  for want, got in ((y[order], y_r), (mean, mean_r), (var, var_r), (grad[order], grad_r)):
    assert_close_to_scale(want, got, 1e-12)


def test_gradients_of_the_statistics_are_exact():
  """d mean/dx = 1/N and d var/dx = 2 (x - mean)/N, alone and mixed with the output's."""
  a = _arrays(6)
  with jax.enable_x64(True):
    x, (scale, bias) = jnp.asarray(a['x']), _per_channel(a, jnp.float64)
    w_mean, w_var = np.random.default_rng(7).standard_normal((2, SHAPE[-1]))

    def two_pass(x):
      mean = jnp.mean(x, (0, 1, 2))
      var = jnp.mean(jnp.square(x - mean), (0, 1, 2))
      return (x - mean) * scale * jax.lax.rsqrt(var + 1e-5) + bias, mean, var

    def custom(x):
      return batch_norm_train(x, scale, bias)

    losses = {'mean': lambda y, mean, var: jnp.sum(mean * w_mean),
              'var': lambda y, mean, var: jnp.sum(var * w_var),
              'all': lambda y, mean, var: jnp.sum(y ** 2) + jnp.sum(mean * w_mean + var * w_var)}
    for name, loss in losses.items():
      grads = [jax.jit(jax.grad(lambda x, f=f: loss(*f(x))))(x) for f in (two_pass, custom)]
      assert_close_to_scale(grads[0], grads[1], 1e-12, name)
    count = np.prod(SHAPE[:-1])
    grad_var = jax.jit(jax.grad(lambda x: jnp.sum(custom(x)[2])))(x)
    assert_close_to_scale(2 * (a['x'] - a['x'].mean(axis=(0, 1, 2))) / count, grad_var, 1e-12)
    np.testing.assert_allclose(jax.jit(jax.grad(lambda x: jnp.sum(custom(x)[1])))(x), 1 / count,
                               rtol=1e-12)
