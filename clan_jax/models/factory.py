"""create_model: the linen Module a config's `model` section describes."""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from clan_jax.base.errors import ConfigError
from clan_jax.models.clan import CLAN
from clan_jax.models.fields import TODAYS_FORMS, ModelConfig
from clan_jax.models.resnet import ResNetClassifier

# 'float32' maps to None: the compute dtype follows the inputs and parameters, so that
# float64 parity checks (jax.enable_x64) run entirely in float64.
COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}
# Where model.dtype='auto' computes in bfloat16: platforms whose matrix units run it natively
# (GPU tensor cores, the TPU's MXU). A CPU emulates bfloat16 products: float32 is kept there.
BFLOAT16_BACKENDS = ('gpu', 'cuda', 'rocm', 'tpu')
# The model's same-function forms (fields.TODAYS_FORMS; models/batch_norm.py and
# models/conv_forms.py): what 'auto' takes on each platform where another form measured
# better (BENCHMARKS.md). On a GPU the downsample is a strided convolution: its strided slice
# feeding a Triton GEMM aborted XLA's GPU compiler (model.remat at batch 128;
# openxla/xla#47381). The CPU keeps today's forms: the others' gains there (0-3 %) were within
# the machine's spread, and they moved the float32 training parity with torch from 1.4e-5 to
# 3e-4 (docs/PARITY.md). The rest stays today's until measured on a GPU.
AUTO_FORMS = {'gpu': {'downsample_impl': 'conv'}}
PLATFORMS = {'cuda': 'gpu', 'rocm': 'gpu'}


def resolve_dtype(dtype: str, backend: Optional[str] = None) -> str:
  """The compute dtype model.dtype names: 'auto' is 'bfloat16' on a GPU or TPU (`backend`,
  default JAX's default backend), else 'float32'; 'float32' and 'bfloat16' are themselves."""
  if dtype != 'auto':
    return dtype
  backend = backend or jax.default_backend()
  return 'bfloat16' if backend in BFLOAT16_BACKENDS else 'float32'


def resolve_form(field: str, value: Any, backend: Optional[str] = None) -> Any:
  """The form a form field (TODAYS_FORMS' keys) names: 'auto' is AUTO_FORMS' entry for the
  platform (`backend`, default JAX's default backend), else today's; others are themselves."""
  if value != 'auto':
    return value
  backend = backend or jax.default_backend()
  return AUTO_FORMS.get(PLATFORMS.get(backend, backend), {}).get(field, TODAYS_FORMS[field])


def create_model(model_config: Any, num_classes: int) -> nn.Module:
  """Builds the model a config's `model` section describes.

  Args:
    model_config: a ConfigDict, dict or any object with the fields of
      clan_jax.models.fields.ModelConfig (configs/default.py's `model` section).
    num_classes: K, the number of output classes.

  Returns:
    A linen Module. `module.apply(variables, images, train=False, return_attention=False)`
    takes NHWC float32 ImageNet-normalised images and returns a dict: 'logits' (B, K),
    and for CLAN 'heads', 'clsa' (if use_clsa) and 'clca' (if use_clca and
    return_attention); see docs/MODEL.md. model.dtype='auto' and the forms' 'auto' are
    resolved here, on the platform JAX computes on (resolve_dtype, resolve_form).
  """
  config = ModelConfig.from_section(model_config)
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
    raise ConfigError(f'num_classes={num_classes!r} is invalid; it must be a positive integer.')
  module = ResNetClassifier if config.name == 'resnet' else CLAN
  values = {**dataclasses.asdict(config), 'dtype': COMPUTE_DTYPES[resolve_dtype(config.dtype)],
            **{field: resolve_form(field, getattr(config, field)) for field in TODAYS_FORMS}}
  # Every field the module declares passes through by name; `name` chose the class (and
  # is linen's own scope name), fields a module lacks (head_loss_weights) are not its own.
  taken = {field.name for field in dataclasses.fields(module)} - {'name', 'parent'}
  return module(num_classes=num_classes, **{k: v for k, v in values.items() if k in taken})
