"""Model construction: `create_model(model_config, num_classes)`.

Imports only jax and flax (no TensorFlow, TFDS, clu or ml_collections), so that a bare
GPU image can build and run the models.
"""

import types
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from clan_jax.config.validation import optional_model_field, validate_model_config
from clan_jax.base.errors import ConfigError
from clan_jax.models.clan import CLAN
from clan_jax.models.loss import cross_entropy, multi_head_loss
from clan_jax.models.resnet import ResNet, ResNetClassifier, stage_channels

# 'float32' maps to None: the compute dtype follows the inputs and parameters, so that
# float64 parity checks (jax.enable_x64) run entirely in float64.
COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


def create_model(model_config: Any, num_classes: int) -> nn.Module:
  """Builds the model a config's `model` section describes.

  Args:
    model_config: a ConfigDict or any object with the fields of configs/default.py's
      `model` section (name, depth, mid_stages, ..., dtype).
    num_classes: K, the number of output classes.

  Returns:
    A linen Module. `module.apply(variables, images, train=False, return_attention=False)`
    takes NHWC float32 ImageNet-normalised images and returns a dict: 'logits' (B, K),
    and for CLAN 'heads', 'clsa' (if use_clsa) and 'clca' (if use_clca and
    return_attention); see docs/MODEL.md.
  """
  if isinstance(model_config, dict):
    model_config = types.SimpleNamespace(**model_config)
  validate_model_config(model_config)
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
    raise ConfigError(f'num_classes={num_classes!r} is invalid; it must be a positive integer.')
  dtype = COMPUTE_DTYPES[model_config.dtype]
  speed = dict(conv1x1_as_matmul=model_config.conv1x1_as_matmul, remat=model_config.remat)
  if model_config.name == 'resnet':
    return ResNetClassifier(num_classes=num_classes, depth=model_config.depth, dtype=dtype,
                            **speed)
  return CLAN(num_classes=num_classes, depth=model_config.depth,
              mid_stages=tuple(int(s) for s in model_config.mid_stages),
              use_clca=model_config.use_clca, use_clsa=model_config.use_clsa,
              clca_kind=model_config.clca_kind, clca_dim=model_config.clca_dim,
              clca_heads=model_config.clca_heads, head_dim=model_config.head_dim,
              fusion=model_config.fusion, dtype=dtype,
              attention_impl=model_config.attention_impl,
              clca_order=optional_model_field(model_config, 'clca_order'), **speed)


__all__ = ['create_model', 'CLAN', 'ResNet', 'ResNetClassifier', 'stage_channels',
           'cross_entropy', 'multi_head_loss', 'COMPUTE_DTYPES']
