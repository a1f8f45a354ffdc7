"""BatchNorm (both impls) and Linear reproduce torch's semantics; PointwiseConv is nn.Conv's 1x1
convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from clan_jax.models.layers import BatchNorm, Linear, PointwiseConv, conv, max_pool


def _batch_norm_case(seed=0, impl='two_pass'):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1
  module = BatchNorm(impl=impl)
  variables = module.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32), train=False)
  variables = jax.tree.map(lambda v: v + rng.uniform(0.1, 0.5, v.shape).astype(np.float32),
                           variables)
  return x, module, variables


@pytest.mark.parametrize('impl', ['two_pass', 'custom_vjp'])
def test_train_mode_matches_torch_including_unbiased_running_variance(impl):
  x, module, variables = _batch_norm_case(impl=impl)
  y, updates = module.apply(variables, jnp.asarray(x, jnp.float32), train=True,
                            mutable=['batch_stats'])
  bn = torch.nn.BatchNorm2d(6)
  with torch.no_grad():
    bn.weight.copy_(torch.from_numpy(np.array(variables['params']['scale'])))
    bn.bias.copy_(torch.from_numpy(np.array(variables['params']['bias'])))
    bn.running_mean.copy_(torch.from_numpy(np.array(variables['batch_stats']['mean'])))
    bn.running_var.copy_(torch.from_numpy(np.array(variables['batch_stats']['var'])))
  bn.train()
  expected = bn(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)))
  np.testing.assert_allclose(np.asarray(y), expected.detach().numpy().transpose(0, 2, 3, 1),
                             atol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['mean'], bn.running_mean.numpy(), rtol=1e-6)
  np.testing.assert_allclose(updates['batch_stats']['var'], bn.running_var.numpy(), rtol=1e-6)
  # The unbiased update differs from the biased one by n/(n-1) = 60/59: a visible margin.
  biased = 0.9 * np.asarray(variables['batch_stats']['var']) + 0.1 * x.var(axis=(0, 1, 2))
  assert np.max(np.abs(biased - bn.running_var.numpy())) > 1e-3


def test_eval_mode_uses_running_statistics():
  x, module, variables = _batch_norm_case(1)
  y = module.apply(variables, jnp.asarray(x, jnp.float32), train=False)
  stats, params = variables['batch_stats'], variables['params']
  expected = (x - stats['mean']) / np.sqrt(stats['var'] + 1e-5) * params['scale'] + params['bias']
  np.testing.assert_allclose(np.asarray(y), expected, atol=1e-5)


def test_bfloat16_input_keeps_float32_statistics():
  x, module, variables = _batch_norm_case(2)
  y, updates = module.apply(variables, jnp.asarray(x, jnp.bfloat16), train=True,
                            mutable=['batch_stats'])
  assert y.dtype == jnp.bfloat16
  assert updates['batch_stats']['var'].dtype == jnp.float32


@pytest.mark.parametrize('impl', ['two_pass', 'custom_vjp'])
def test_single_value_per_channel_in_train_mode_is_a_clear_error(impl):
  module = BatchNorm(impl=impl)
  x = jnp.ones((1, 1, 1, 4))
  variables = module.init(jax.random.PRNGKey(0), x, train=False)
  with pytest.raises(ValueError, match='more than one value per channel'):
    module.apply(variables, x, train=True, mutable=['batch_stats'])


def test_an_unresolved_or_unknown_impl_is_a_clear_error():
  x = jnp.ones((2, 1, 1, 4))
  for impl in ('auto', 'one_pass'):
    with pytest.raises(ValueError, match="impl=.*allowed: two_pass, custom_vjp"):
      BatchNorm(impl=impl).init(jax.random.PRNGKey(0), x, train=False)


def test_linear_matches_torch_init_bounds_and_output():
  module = Linear(1000)
  x = jnp.ones((2, 512))
  variables = module.init(jax.random.PRNGKey(0), x)
  bound = 1 / np.sqrt(512)
  for name in ('kernel', 'bias'):
    values = np.asarray(variables['params'][name])
    assert np.all(np.abs(values) <= bound) and np.max(np.abs(values)) > 0.99 * bound
  kernel, bias = variables['params']['kernel'], variables['params']['bias']
  np.testing.assert_allclose(module.apply(variables, x), x @ kernel + bias, rtol=1e-6)


@pytest.mark.parametrize('stride, use_bias', [(1, False), (2, False), (1, True)])
def test_pointwise_conv_is_a_1x1_convolution_with_the_same_parameters(stride, use_bias):
  x = np.random.default_rng(0).standard_normal((2, 7, 6, 5)).astype(np.float32)
  in_features = 5 if use_bias else None
  as_conv = conv(4, 1, stride, in_features=in_features)
  as_matmul = conv(4, 1, stride, in_features=in_features, as_matmul=True)
  assert isinstance(as_matmul, PointwiseConv)
  variables = as_conv.init(jax.random.PRNGKey(0), x)
  matmul_variables = as_matmul.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, matmul_variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(matmul_variables)):
    np.testing.assert_array_equal(a, b)  # The same initialisation too.
  expected, actual = as_conv.apply(variables, x), as_matmul.apply(variables, x)
  assert actual.shape == expected.shape == (2, -(-7 // stride), -(-6 // stride), 4)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('size', [8, 7])
def test_max_pool_equals_reduce_window_max_pool_and_its_gradient(size):
  """The same outputs and gradients as flax's max pool (select-and-scatter, which like
  torch gives a window's gradient to its first maximum), with distinct values and with
  ties (a constant image)."""
  import flax.linen as nn

  reference = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  ours = lambda x: max_pool(x, 3, 2, 1)
  count = 2 * size * size * 3
  distinct = jnp.asarray(np.random.default_rng(0).permutation(count).reshape(2, size, size, 3),
                         jnp.float32) - count / 2
  weights = jnp.arange(1.0, 4.0)
  grad = lambda f, x: jax.grad(lambda x: jnp.sum(f(x) * weights))(x)
  np.testing.assert_array_equal(ours(distinct), reference(distinct))
  np.testing.assert_array_equal(grad(ours, distinct), grad(reference, distinct))
  constant = jnp.ones((2, size, size, 3))
  np.testing.assert_array_equal(ours(constant), reference(constant))
  np.testing.assert_array_equal(grad(ours, constant), grad(reference, constant))
