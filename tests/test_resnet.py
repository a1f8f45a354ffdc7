"""The Flax ResNet: architecture, parameter counts, initialisation and the create_model API."""

import subprocess
import sys
import types

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from clan_jax.convert import abstract_variables
from clan_jax.base.errors import ConfigError
from clan_jax.models import create_model
from clan_jax.models.resnet import BasicBlock, Bottleneck, stage_channels
from clan_jax.pytorch import twin
from clan_jax.pytorch.conversion import flax_to_torch_arrays, key_table, to_flax_layout
from helpers.commands import REPO_ROOT
from helpers.torch_helpers import (assert_close_to_scale, numpy_state_dict, randomize_, to_nchw,
                                   to_nhwc)


def _param_count(variables) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('depth', [18, 34, 50, 101, 152])
def test_parameter_counts_equal_torchvision(resnet_config, torchvision_shapes, depth):
  resnet_config.depth = depth
  variables = abstract_variables(create_model(resnet_config, 1000))
  assert _param_count(variables) == torchvision_shapes[f'resnet{depth}_num_params']


def test_resnet50_with_1000_classes_has_25557032_parameters(resnet_config):
  resnet_config.depth = 50
  assert _param_count(abstract_variables(create_model(resnet_config, 1000))) == 25_557_032


@pytest.mark.parametrize('depth', [18, 50])
def test_stage_features_have_torchvision_shapes(resnet_config, depth):
  resnet_config.depth = depth
  model = create_model(resnet_config, 10)
  variables = abstract_variables(model, 64)
  features = jax.eval_shape(
      lambda v, x: model.apply(v, x, method='features'), variables,
      jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
  channels = stage_channels(depth)
  assert {k: v.shape for k, v in features.items()} == {
      'layer1': (2, 16, 16, channels['layer1']), 'layer2': (2, 8, 8, channels['layer2']),
      'layer3': (2, 4, 4, channels['layer3']), 'layer4': (2, 2, 2, channels['layer4'])}


def test_apply_returns_logits_dict_and_accepts_any_config_object(resnet_config):
  namespace = types.SimpleNamespace(**resnet_config.to_dict())
  model = create_model(namespace, 7)
  assert isinstance(model, nn.Module)
  images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  outputs = model.apply(variables, images, train=False)
  assert set(outputs) == {'logits'}
  assert outputs['logits'].shape == (2, 7) and outputs['logits'].dtype == jnp.float32
  outputs, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
  assert not np.allclose(updates['batch_stats']['backbone']['bn1']['mean'], 0)


def test_bfloat16_computes_in_bf16_and_returns_float32_logits(resnet_config):
  images = jnp.asarray(np.random.default_rng(1).standard_normal((2, 64, 64, 3)), jnp.float32)
  model32 = create_model(resnet_config, 5)
  variables = model32.init(jax.random.PRNGKey(0), images, train=False)
  resnet_config.dtype = 'bfloat16'
  model16 = create_model(resnet_config, 5)
  logits32 = model32.apply(variables, images)['logits']
  logits16 = model16.apply(variables, images)['logits']
  features16 = model16.apply(variables, images, method='features')
  assert logits16.dtype == jnp.float32 and features16['layer4'].dtype == jnp.bfloat16
  # bf16 keeps 8 bits of mantissa; through 18 layers that is a few percent of the scale.
  scale = float(jnp.max(jnp.abs(logits32)))
  assert float(jnp.max(jnp.abs(logits16 - logits32))) <= 0.05 * scale


def test_initialisation_follows_torchvision(resnet_config):
  model = create_model(resnet_config, 10)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))['params']
  conv1 = np.asarray(params['backbone']['conv1']['kernel'])  # (7, 7, 3, 64): fan-out 64 * 49.
  assert abs(conv1.std() / np.sqrt(2 / (64 * 49)) - 1) < 0.05
  assert np.abs(conv1).max() > 2.5 * np.sqrt(2 / (64 * 49))  # Untruncated normal.
  bn = params['backbone']['layer1_0']['bn2']
  assert np.all(bn['scale'] == 1) and np.all(bn['bias'] == 0)
  bound = 1 / np.sqrt(512)
  fc = params['fc']
  assert np.abs(fc['kernel']).max() <= bound and np.abs(fc['bias']).max() <= bound


def test_invalid_arguments_are_clear_errors(resnet_config):
  with pytest.raises(ConfigError, match='num_classes=0 is invalid'):
    create_model(resnet_config, 0)
  resnet_config.depth = 20
  with pytest.raises(ConfigError, match='model.depth=20 is invalid'):
    create_model(resnet_config, 10)


BLOCKS = {'basic': (BasicBlock, twin.BasicBlock), 'bottleneck': (Bottleneck, twin.Bottleneck)}


def _flax_block_variables(block, arrays, x):
  """The twin block's weights and statistics (numpy_state_dict) as the Flax block's."""
  table = key_table(jax.eval_shape(lambda x: block.init(jax.random.PRNGKey(0), x, False), x))
  flat = {'params': {}, 'batch_stats': {}}
  for key, (collection, path, _) in table.items():
    flat[collection][path] = jnp.asarray(to_flax_layout(arrays[key]))
  return {c: traverse_util.unflatten_dict(values) for c, values in flat.items()}


@pytest.mark.parametrize('bn_impl', ['two_pass', 'custom_vjp'])
@pytest.mark.parametrize('kind', list(BLOCKS))
def test_float64_blocks_match_the_twin_in_train_mode(kind, bn_impl):
  """A strided block with its downsample (every BatchNorm form of the network: relu,
  residual + relu, plain): outputs, running statistics and gradients against the twin."""
  flax_cls, torch_cls = BLOCKS[kind]
  rng = np.random.default_rng(0)
  images = rng.standard_normal((2, 8, 8, 16))
  twin_block = randomize_(torch_cls(16, 8, 2), 0).double().train()
  arrays = numpy_state_dict(twin_block)  # Before the step updates the statistics.
  x = to_nchw(images).requires_grad_()
  y = twin_block(x)
  cotangent = rng.standard_normal(to_nhwc(y).shape)
  (y * to_nchw(cotangent)).sum().backward()
  expected = {'y': to_nhwc(y), 'dx': to_nhwc(x.grad),
              **{k: v for k, v in numpy_state_dict(twin_block).items() if 'running' in k},
              **{f'd{k}': p.grad.numpy() for k, p in twin_block.named_parameters()}}
  with jax.enable_x64(True):
    block = flax_cls(8, 2, bn_impl=bn_impl)
    variables = _flax_block_variables(block, arrays, jnp.asarray(images))

    def loss(params, x):
      y, updates = block.apply({**variables, 'params': params}, x, True,
                               mutable=['batch_stats'])
      return jnp.sum(y * cotangent), (y, updates)

    (grads, grad_x), (y, updates) = jax.jit(jax.grad(loss, (0, 1), has_aux=True))(
        variables['params'], jnp.asarray(images))
  actual = {'y': y, 'dx': grad_x, **flax_to_torch_arrays(updates),
            **{f'd{k}': v for k, v in flax_to_torch_arrays({'params': grads}).items()}}
  assert actual.keys() == expected.keys()
  for name in expected:
    assert_close_to_scale(expected[name], actual[name], 1e-9, name)


def test_core_modules_import_no_tensorflow_tfds_clu_ml_collections_or_torch():
  heavy = ['tensorflow', 'tensorflow_datasets', 'clu', 'ml_collections', 'torch']
  code = ('import sys, clan_jax, clan_jax.models, clan_jax.convert\n'
          f'print(sorted(m for m in {heavy!r} if m in sys.modules))')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True)
  assert result.stdout.strip() == '[]', result.stdout
