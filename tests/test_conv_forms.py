"""clan_jax.models.conv_forms: each form is today's function with today's parameters (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clan_jax.models.conv_forms import (ChannelPaddedConv, clsa_conv, downsample_conv,
                                        stem_conv)
from clan_jax.models.layers import PointwiseConv


def _inputs(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def _assert_same_function(reference, module, x):
  """The same parameter tree (values too, from the same key), and, with random parameters,
  the same outputs and gradients wrt the input and every parameter, to float64 rounding."""
  variables = jax.jit(reference.init)(jax.random.PRNGKey(0), x)
  assert jax.tree.all(jax.tree.map(np.array_equal,
                                   jax.jit(module.init)(jax.random.PRNGKey(0), x), variables))
  keys = iter(jax.random.split(jax.random.PRNGKey(1), len(jax.tree.leaves(variables))))
  variables = jax.tree.map(lambda v: jax.random.normal(next(keys), v.shape, jnp.float64),
                           variables)
  weights = _inputs(jax.eval_shape(reference.apply, variables, x).shape, seed=2)

  def outputs_and_grads(m):  # Jitted: the forms' many small ops would each compile eagerly.
    return jax.jit(lambda v, x: (m.apply(v, x), jax.grad(
        lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)) * weights), argnums=(0, 1))(v, x)))(
            variables, x)

  expected, actual = outputs_and_grads(reference), outputs_and_grads(module)
  for (path, leaf), got in zip(jax.tree_util.tree_leaves_with_path(expected),
                              jax.tree.leaves(actual)):
    np.testing.assert_allclose(got, leaf, rtol=1e-12, atol=1e-12,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('channels', [4, 8])
def test_stem_with_padded_channels_is_the_3_channel_stem(channels):
  with jax.enable_x64(True):
    module = stem_conv(channels)
    assert isinstance(module, ChannelPaddedConv)
    _assert_same_function(stem_conv(3), module, _inputs((2, 32, 32, 3)))


def test_strided_1x1_as_a_convolution_is_the_slice_and_product():
  with jax.enable_x64(True):
    reference = downsample_conv(24, 2, 'slice_matmul', as_matmul=True)
    assert isinstance(reference, PointwiseConv)
    _assert_same_function(reference, downsample_conv(24, 2, 'conv', as_matmul=True),
                          _inputs((2, 9, 9, 16)))  # Odd: the stride's last row counts.
  # Without a stride there is no slice: the product whatever the form.
  assert isinstance(downsample_conv(24, 1, 'conv', as_matmul=True), PointwiseConv)


@pytest.mark.parametrize('impl', ['taps', 'im2col'])
def test_clsa_forms_are_the_7x7_convolution(impl):
  with jax.enable_x64(True):
    _assert_same_function(clsa_conv('conv'), clsa_conv(impl), _inputs((2, 12, 10, 2)))


@pytest.mark.parametrize('impl', ['taps', 'im2col'])
def test_clsa_forms_in_bfloat16_return_the_compute_dtype(impl):
  x = _inputs((2, 8, 8, 2)).astype(jnp.bfloat16)
  reference = clsa_conv('conv', dtype=jnp.bfloat16)
  variables = jax.jit(reference.init)(jax.random.PRNGKey(0), x)
  expected = jax.jit(reference.apply)(variables, x)
  actual = jax.jit(clsa_conv(impl, dtype=jnp.bfloat16).apply)(variables, x)
  assert actual.dtype == expected.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(actual), np.float32(expected), rtol=0.02, atol=0.02)


@pytest.mark.parametrize('make', [lambda: stem_conv('auto'), lambda: stem_conv(True),
                                  lambda: clsa_conv('fft'),
                                  lambda: downsample_conv(8, 2, 'auto', as_matmul=True)])
def test_unresolved_or_unknown_forms_are_refused(make):
  with pytest.raises(ValueError, match="allowed here: .*'auto' is resolved by create_model"):
    make()
