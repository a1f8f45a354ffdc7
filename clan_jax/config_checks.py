"""Validation of configuration values, with messages that name the field and the fix.

Pure Python: it reads attributes, so it accepts an ml_collections ConfigDict, a
dataclass or a SimpleNamespace alike, and it never imports ml_collections.
"""

from typing import Any

from clan_jax.errors import ConfigError

MODEL_NAMES = ('clan', 'resnet')
DEPTHS = (18, 34, 50, 101, 152)
CLCA_KINDS = ('cross_attention', 'global_context')
FUSIONS = ('sum', 'top', 'concat')
DTYPES = ('float32', 'bfloat16')
HEAD_LOSS_KEYS = ('top', 'mid', 'concat')
MID_STAGE_CHOICES = (1, 2, 3)

MODEL_FIELDS = ('name', 'depth', 'mid_stages', 'use_clca', 'use_clsa', 'clca_kind',
                'clca_dim', 'clca_heads', 'head_dim', 'fusion', 'head_loss_weights',
                'dtype')


def _get(config: Any, field: str, prefix: str) -> Any:
  if isinstance(config, dict):
    if field in config:
      return config[field]
  elif hasattr(config, field):
    return getattr(config, field)
  raise ConfigError(f'{prefix}{field} is missing from the configuration; '
                    'start from configs/default.py, which sets every field.')


def _check_choice(value: Any, allowed: tuple, name: str) -> None:
  # bool is an int subclass: True must not pass as depth 1.
  if isinstance(value, bool) or value not in allowed:
    raise ConfigError(f'{name}={value!r} is invalid; allowed values: '
                      f'{", ".join(repr(a) for a in allowed)}.')


def _check_bool(value: Any, name: str) -> None:
  if not isinstance(value, bool):
    raise ConfigError(f'{name}={value!r} is invalid; it must be True or False.')


def _check_positive_int(value: Any, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f'{name}={value!r} is invalid; it must be a positive integer.')


def _check_mid_stages(value: Any, name: str) -> tuple[int, ...]:
  stages = tuple(value) if isinstance(value, (list, tuple)) else None
  if (not stages or any(isinstance(s, bool) or s not in MID_STAGE_CHOICES for s in stages)
      or list(stages) != sorted(set(stages))):
    raise ConfigError(
        f'{name}={value!r} is invalid; it must be a non-empty, sorted tuple of distinct '
        f'stages from {MID_STAGE_CHOICES} (layer1..layer3), e.g. (2, 3).')
  return stages


def _check_head_loss_weights(value: Any, name: str) -> None:
  weights = dict(value.items()) if hasattr(value, 'items') else None
  if weights is None or sorted(weights) != sorted(HEAD_LOSS_KEYS):
    raise ConfigError(f'{name}={weights if weights is not None else value!r} is invalid; it must map exactly the keys '
                      f'{HEAD_LOSS_KEYS} to non-negative numbers.')
  for key, weight in weights.items():
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
      raise ConfigError(f'{name}.{key}={weight!r} is invalid; it must be a number >= 0.')
  if not any(weights.values()):
    raise ConfigError(f'{name} are all zero; at least one head must carry the loss.')


def validate_model_config(model: Any, prefix: str = 'model.') -> None:
  """Raises ConfigError naming the first invalid field of a model section."""
  values = {field: _get(model, field, prefix) for field in MODEL_FIELDS}
  _check_choice(values['name'], MODEL_NAMES, prefix + 'name')
  _check_choice(values['depth'], DEPTHS, prefix + 'depth')
  _check_choice(values['dtype'], DTYPES, prefix + 'dtype')
  _check_mid_stages(values['mid_stages'], prefix + 'mid_stages')
  _check_bool(values['use_clca'], prefix + 'use_clca')
  _check_bool(values['use_clsa'], prefix + 'use_clsa')
  _check_choice(values['clca_kind'], CLCA_KINDS, prefix + 'clca_kind')
  _check_choice(values['fusion'], FUSIONS, prefix + 'fusion')
  for field in ('clca_dim', 'clca_heads', 'head_dim'):
    _check_positive_int(values[field], prefix + field)
  if values['clca_dim'] % values['clca_heads']:
    raise ConfigError(
        f'{prefix}clca_dim={values["clca_dim"]} is not divisible by '
        f'{prefix}clca_heads={values["clca_heads"]}; each attention head takes '
        'clca_dim / clca_heads channels.')
  _check_head_loss_weights(values['head_loss_weights'], prefix + 'head_loss_weights')


def check_image_size(image_size: int, name: str = 'image size') -> None:
  """CLAN's pooling windows are whole only for multiples of 32 (the backbone's stride)."""
  if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
    raise ConfigError(f'{name}={image_size!r} is invalid; it must be a positive integer.')
  if image_size % 32:
    lower = max(32, image_size // 32 * 32)
    raise ConfigError(f'{name}={image_size} is not a multiple of 32 (the backbone stride); '
                      f'use e.g. {lower} or {lower + 32}.')


def validate_config(config: Any) -> None:
  """Validates a whole configuration (configs/default.py's sections)."""
  validate_model_config(_get(config, 'model', ''))
