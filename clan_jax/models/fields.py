"""The model section's fields: the one place that names them, their defaults and help.

configs/default.py, the config validation, the step benchmark and create_model all read
`ModelConfig`, so a new field is added here once. Pure Python (the standard library and
clan_jax.base.errors only): configs load it without importing JAX or flax.
"""

import dataclasses
from typing import Any, Optional

from clan_jax.base.errors import ConfigError

MODEL_NAMES = ('clan', 'resnet')
DEPTHS = (18, 34, 50, 101, 152)
CLCA_KINDS = ('cross_attention', 'global_context')
FUSIONS = ('sum', 'top', 'concat')
DTYPES = ('auto', 'float32', 'bfloat16')
HEAD_LOSS_KEYS = ('top', 'mid', 'concat')
MID_STAGE_CHOICES = (1, 2, 3)
ATTENTION_IMPLS = ('auto', 'xla', 'cudnn')
CLCA_ORDERS = ('auto', 'standard', 'folded')
BN_IMPLS = ('auto', 'two_pass', 'custom_vjp')
DOWNSAMPLE_IMPLS = ('auto', 'slice_matmul', 'conv')
STEM_CHANNELS = ('auto', 3, 4, 8)
CLSA_IMPLS = ('auto', 'conv', 'taps', 'im2col')
# The same-function forms' fields and today's form of each (the form before issue 20; the
# benchmark's 'today'). 'auto' is resolved per platform by models/factory.py's AUTO_FORMS.
TODAYS_FORMS = {'bn_impl': 'two_pass', 'downsample_impl': 'slice_matmul', 'stem_channels': 3,
                'clsa_impl': 'conv'}
# Implementation switches added after configs were first saved (a run's config.json):
# missing means the default, so older workdirs still load. Any other missing field is an error.
FIELDS_ADDED_LATER = frozenset({'clca_order', *TODAYS_FORMS})


def _field(default: Any, help_text: str, choices: Optional[tuple] = None) -> Any:
  metadata = {'help': help_text, **({'choices': choices} if choices else {})}
  if isinstance(default, dict):  # Mutable: each instance gets its own copy.
    return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model section (docs/MODEL.md); each field's metadata has its help."""
  name: str = _field('clan', "'clan' or 'resnet' (the plain classifier: GAP -> fc).",
                     MODEL_NAMES)
  depth: int = _field(50, 'ResNet depth: 18, 34, 50, 101 or 152.', DEPTHS)
  mid_stages: tuple[int, ...] = _field(
      (2, 3), 'Backbone stages whose maps are the mid-level maps (layer4 is the top-level '
      'map): a sorted tuple of distinct stages from 1, 2, 3.')
  use_clca: bool = _field(True, 'Cross-layer context attention (top -> mid).')
  use_clsa: bool = _field(True, 'Cross-layer spatial attention (mid -> top).')
  clca_kind: str = _field('cross_attention',
                          "'cross_attention' or 'global_context' (GCNet-style pooling).",
                          CLCA_KINDS)
  clca_dim: int = _field(256, "d: width of CLCA's queries, keys and values.")
  clca_heads: int = _field(1, 'Attention heads; clca_dim must be divisible by it.')
  head_dim: int = _field(512, "Width of each mid-level head's 1x1 conv.")
  fusion: str = _field('sum', "Prediction: 'sum' of all heads' logits, 'top' or 'concat'.",
                       FUSIONS)
  head_loss_weights: dict = _field(
      {'top': 1.0, 'mid': 1.0, 'concat': 1.0},
      "Loss weight of the 'top' head, of each 'mid' head and of the 'concat' head.")
  dtype: str = _field(
      'auto', "Compute dtype: 'auto' (bfloat16 on a GPU or TPU, float32 on a CPU; resolved "
      "where the model is created), 'float32' or 'bfloat16' (mixed precision).", DTYPES)
  # Speed and memory only (the same parameters and function; BENCHMARKS.md):
  conv1x1_as_matmul: bool = _field(True, '1x1 convolutions as matrix products.')
  attention_impl: str = _field(
      'auto', "CLCA's attention: 'auto' (cuDNN's fused kernel on a GPU in bfloat16, else "
      "XLA), 'xla', 'cudnn'. Attention maps for visualisation always take the plain path.",
      ATTENTION_IMPLS)
  clca_order: str = _field(
      'auto', "CLCA's order of products: 'auto' (the fewer FLOPs for the input size), "
      "'standard' (project the mid map to queries, attend, project back) or 'folded' "
      '(docs/MODEL.md).', CLCA_ORDERS)
  bn_impl: str = _field(
      'auto', "Train-mode BatchNorm: 'auto' (the platform's measured choice; resolved "
      "where the model is created), 'two_pass' (jnp ops, JAX's autodiff) or "
      "'custom_vjp' (one-pass shifted statistics, a hand-written backward; docs/MODEL.md).",
      BN_IMPLS)
  remat: bool = _field(False, 'Recompute each ResNet block in the backward pass: less memory.')
  # 'auto' below: the platform's measured choice (models/factory.py, AUTO_FORMS).
  downsample_impl: str = _field(
      'auto', "The shortcut's strided 1x1 when conv1x1_as_matmul: 'auto', 'slice_matmul' (a "
      "strided slice, then a matrix product) or 'conv' (a strided convolution).",
      DOWNSAMPLE_IMPLS)
  stem_channels: Any = _field(
      'auto', "The stem's input channels: 'auto', 3, or 4 or 8 (the image and the kernel "
      'zero-padded at apply time; the parameter keeps its 3 channels).', STEM_CHANNELS)
  clsa_impl: str = _field(
      'auto', "CLSA's 7x7 convolution: 'auto', 'conv', 'taps' (49 shifted slices times the "
      "kernel's entries, summed) or 'im2col' (one product of the 98-wide patches).",
      CLSA_IMPLS)

  @classmethod
  def from_section(cls, section: Any, prefix: str = 'model.') -> 'ModelConfig':
    """The validated fields of a model section (ConfigDict, dict, namespace, ModelConfig).

    Fields in FIELDS_ADDED_LATER take their default when absent; any other missing field
    raises ConfigError naming `<prefix><field>`. Extra fields are ignored.
    """
    defaults = cls()
    values = {}
    for field in dataclasses.fields(cls):
      if field.name in FIELDS_ADDED_LATER and not has_field(section, field.name):
        values[field.name] = getattr(defaults, field.name)
      else:
        values[field.name] = get_field(section, field.name, prefix)
    validate_model_values(values, prefix)
    return cls(**{**values, 'mid_stages': tuple(int(s) for s in values['mid_stages']),
                  'head_loss_weights': dict(values['head_loss_weights'].items())})


def has_field(section: Any, field: str) -> bool:
  return field in section if isinstance(section, dict) else hasattr(section, field)


def get_field(section: Any, field: str, prefix: str) -> Any:
  """A section's field; ConfigError naming `<prefix><field>` when it is missing."""
  if not has_field(section, field):
    raise ConfigError(f'{prefix}{field} is missing from the configuration; '
                      'start from configs/default.py, which sets every field.')
  return section[field] if isinstance(section, dict) else getattr(section, field)


def check_choice(value: Any, allowed: tuple, name: str) -> None:
  # bool is an int subclass: True must not pass as depth 1.
  if isinstance(value, bool) or value not in allowed:
    raise ConfigError(f'{name}={value!r} is invalid; allowed values: '
                      f'{", ".join(repr(a) for a in allowed)}.')


def check_bool(value: Any, name: str) -> None:
  if not isinstance(value, bool):
    raise ConfigError(f'{name}={value!r} is invalid; it must be True or False.')


def check_positive_int(value: Any, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f'{name}={value!r} is invalid; it must be a positive integer.')


def _check_mid_stages(value: Any, name: str) -> None:
  stages = tuple(value) if isinstance(value, (list, tuple)) else None
  if (not stages or any(isinstance(s, bool) or s not in MID_STAGE_CHOICES for s in stages)
      or list(stages) != sorted(set(stages))):
    raise ConfigError(
        f'{name}={value!r} is invalid; it must be a non-empty, sorted tuple of distinct '
        f'stages from {MID_STAGE_CHOICES} (layer1..layer3), e.g. (2, 3).')


def _check_head_loss_weights(value: Any, name: str) -> None:
  weights = dict(value.items()) if hasattr(value, 'items') else None
  if weights is None or sorted(weights) != sorted(HEAD_LOSS_KEYS):
    raise ConfigError(f'{name}={weights if weights is not None else value!r} is invalid; '
                      f'it must map exactly the keys {HEAD_LOSS_KEYS} to non-negative numbers.')
  for key, weight in weights.items():
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
      raise ConfigError(f'{name}.{key}={weight!r} is invalid; it must be a number >= 0.')
  if not any(weights.values()):
    raise ConfigError(f'{name} are all zero; at least one head must carry the loss.')


def validate_model_values(values: dict, prefix: str = 'model.') -> None:
  """Raises ConfigError naming the first invalid value of {field: value}, every field given."""
  check_choice(values['name'], MODEL_NAMES, prefix + 'name')
  check_choice(values['depth'], DEPTHS, prefix + 'depth')
  check_choice(values['dtype'], DTYPES, prefix + 'dtype')
  _check_mid_stages(values['mid_stages'], prefix + 'mid_stages')
  check_bool(values['use_clca'], prefix + 'use_clca')
  check_bool(values['use_clsa'], prefix + 'use_clsa')
  check_choice(values['clca_kind'], CLCA_KINDS, prefix + 'clca_kind')
  check_choice(values['fusion'], FUSIONS, prefix + 'fusion')
  for field in ('clca_dim', 'clca_heads', 'head_dim'):
    check_positive_int(values[field], prefix + field)
  if values['clca_dim'] % values['clca_heads']:
    raise ConfigError(
        f'{prefix}clca_dim={values["clca_dim"]} is not divisible by '
        f'{prefix}clca_heads={values["clca_heads"]}; each attention head takes '
        'clca_dim / clca_heads channels.')
  _check_head_loss_weights(values['head_loss_weights'], prefix + 'head_loss_weights')
  check_bool(values['conv1x1_as_matmul'], prefix + 'conv1x1_as_matmul')
  check_bool(values['remat'], prefix + 'remat')
  check_choice(values['attention_impl'], ATTENTION_IMPLS, prefix + 'attention_impl')
  check_choice(values['clca_order'], CLCA_ORDERS, prefix + 'clca_order')
  check_choice(values['bn_impl'], BN_IMPLS, prefix + 'bn_impl')
  check_choice(values['downsample_impl'], DOWNSAMPLE_IMPLS, prefix + 'downsample_impl')
  check_choice(values['stem_channels'], STEM_CHANNELS, prefix + 'stem_channels')
  check_choice(values['clsa_impl'], CLSA_IMPLS, prefix + 'clsa_impl')


def check_image_size(image_size: int, name: str = 'image size') -> None:
  """CLAN's pooling windows are whole only for multiples of 32 (the backbone's stride)."""
  check_positive_int(image_size, name)
  if image_size % 32:
    lower = max(32, image_size // 32 * 32)
    raise ConfigError(f'{name}={image_size} is not a multiple of 32 (the backbone stride); '
                      f'use e.g. {lower} or {lower + 32}.')
