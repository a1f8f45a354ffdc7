"""Model construction: `create_model(model_config, num_classes)`.

Imports only jax and flax (no TensorFlow, TFDS, clu or ml_collections), so that a bare
GPU image can build and run the models.
"""

import types
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from clan_jax.config_checks import validate_model_config
from clan_jax.errors import ConfigError
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
    A linen Module; `module.apply(variables, images, train=False)` takes NHWC float32
    ImageNet-normalised images and returns a dict with 'logits' (B, K).
  """
  if isinstance(model_config, dict):
    model_config = types.SimpleNamespace(**model_config)
  validate_model_config(model_config)
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
    raise ConfigError(f'num_classes={num_classes!r} is invalid; it must be a positive integer.')
  dtype = COMPUTE_DTYPES[model_config.dtype]
  if model_config.name == 'resnet':
    return ResNetClassifier(num_classes=num_classes, depth=model_config.depth, dtype=dtype)
  raise ConfigError("model.name='clan' is not available in this version yet; "
                    "use model.name='resnet'.")


__all__ = ['create_model', 'ResNet', 'ResNetClassifier', 'stage_channels', 'COMPUTE_DTYPES']
