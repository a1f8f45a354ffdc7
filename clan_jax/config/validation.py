"""Validation of configuration values, with messages that name the field and the fix.

Pure Python: it reads attributes, so it accepts an ml_collections ConfigDict, a
dataclass or a SimpleNamespace alike, and it never imports ml_collections.
"""

from typing import Any

from clan_jax.base.errors import ConfigError

MODEL_NAMES = ('clan', 'resnet')
DEPTHS = (18, 34, 50, 101, 152)
CLCA_KINDS = ('cross_attention', 'global_context')
FUSIONS = ('sum', 'top', 'concat')
DTYPES = ('float32', 'bfloat16')
HEAD_LOSS_KEYS = ('top', 'mid', 'concat')
MID_STAGE_CHOICES = (1, 2, 3)
AIRCRAFT_LABELS = ('variant', 'family', 'manufacturer')

MODEL_FIELDS = ('name', 'depth', 'mid_stages', 'use_clca', 'use_clsa', 'clca_kind',
                'clca_dim', 'clca_heads', 'head_dim', 'fusion', 'head_loss_weights',
                'dtype', 'conv1x1_as_matmul', 'attention_impl', 'remat')
ATTENTION_IMPLS = ('auto', 'xla', 'cudnn')
CLCA_ORDERS = ('auto', 'standard', 'folded')
# Implementation switches added after configs were first saved (a run's config.json):
# missing means the default, so older workdirs still load.
OPTIONAL_MODEL_FIELDS = {'clca_order': 'auto'}


def _get(config: Any, field: str, prefix: str) -> Any:
  if isinstance(config, dict):
    if field in config:
      return config[field]
  elif hasattr(config, field):
    return getattr(config, field)
  raise ConfigError(f'{prefix}{field} is missing from the configuration; '
                    'start from configs/default.py, which sets every field.')


def optional_model_field(model: Any, field: str) -> Any:
  """An OPTIONAL_MODEL_FIELDS value of a model section, or its default when absent."""
  if isinstance(model, dict):
    return model.get(field, OPTIONAL_MODEL_FIELDS[field])
  return getattr(model, field, OPTIONAL_MODEL_FIELDS[field])


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
  _check_bool(values['conv1x1_as_matmul'], prefix + 'conv1x1_as_matmul')
  _check_bool(values['remat'], prefix + 'remat')
  _check_choice(values['attention_impl'], ATTENTION_IMPLS, prefix + 'attention_impl')
  _check_choice(optional_model_field(model, 'clca_order'), CLCA_ORDERS, prefix + 'clca_order')


def check_image_size(image_size: int, name: str = 'image size') -> None:
  """CLAN's pooling windows are whole only for multiples of 32 (the backbone's stride)."""
  if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
    raise ConfigError(f'{name}={image_size!r} is invalid; it must be a positive integer.')
  if image_size % 32:
    lower = max(32, image_size // 32 * 32)
    raise ConfigError(f'{name}={image_size} is not a multiple of 32 (the backbone stride); '
                      f'use e.g. {lower} or {lower + 32}.')


def _check_non_negative_int(value: Any, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ConfigError(f'{name}={value!r} is invalid; it must be an integer >= 0.')


def _check_fraction_range(value: Any, name: str) -> None:
  pair = tuple(value) if isinstance(value, (list, tuple)) else ()
  if (len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                for v in pair) or not 0 < pair[0] <= pair[1] <= 1):
    raise ConfigError(f'{name}={value!r} is invalid; it must be (low, high) with '
                      '0 < low <= high <= 1.')


def validate_dataset_config(dataset: Any, prefix: str = 'dataset.') -> None:
  """Raises ConfigError naming the first invalid field of a dataset section."""
  from clan_jax.datasets import DATASET_NAMES, spec_from_config  # Light: no TensorFlow.

  get = lambda field: _get(dataset, field, prefix)
  _check_choice(get('name'), DATASET_NAMES, prefix + 'name')
  for field in ('data_dir', 'manual_dir', 'root', 'train_split', 'eval_split'):
    if not isinstance(get(field), str):
      raise ConfigError(f'{prefix}{field}={get(field)!r} is invalid; it must be a string.')
  for field in ('train_split', 'eval_split'):
    if not get(field):
      raise ConfigError(f'{prefix}{field} is empty; name a split, e.g. train or test.')
  if get('name') == 'folder' and not get('root'):
    raise ConfigError(f"{prefix}root is empty; {prefix}name='folder' reads "
                      'root/<split>/<class>/<image>: set it to that folder.')
  _check_non_negative_int(get('num_classes'), prefix + 'num_classes')
  _check_non_negative_int(get('shuffle_seed'), prefix + 'shuffle_seed')
  _check_positive_int(get('resize_size'), prefix + 'resize_size')
  check_image_size(get('crop_size'), prefix + 'crop_size')
  if get('resize_size') < get('crop_size'):
    raise ConfigError(f'{prefix}resize_size={get("resize_size")} is smaller than '
                      f'{prefix}crop_size={get("crop_size")}; the crop is taken from the '
                      'resized image.')
  _check_bool(get('cache'), prefix + 'cache')
  if get('name') == 'synthetic':
    spec_from_config(get('synthetic'))
  _check_choice(get('aircraft_label'), AIRCRAFT_LABELS, prefix + 'aircraft_label')
  _check_bool(get('aircraft_crop_banner'), prefix + 'aircraft_crop_banner')
  augment = get('augment')
  for field in ('random_crop', 'flip', 'random_resized_crop'):
    _check_bool(_get(augment, field, prefix + 'augment.'), f'{prefix}augment.{field}')
  _check_fraction_range(_get(augment, 'crop_area', prefix + 'augment.'),
                        f'{prefix}augment.crop_area')
  jitter = _get(augment, 'color_jitter', prefix + 'augment.')
  if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
    raise ConfigError(f'{prefix}augment.color_jitter={jitter!r} is invalid; it must be in '
                      '[0, 1] (0: off).')


def _check_number(value: Any, name: str, low: float, high: float = float('inf')) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
    bounds = f'in [{low}, {high}]' if high != float('inf') else f'>= {low}'
    raise ConfigError(f'{name}={value!r} is invalid; it must be a number {bounds}.')


def validate_optimizer_config(optimizer: Any, prefix: str = 'optimizer.') -> None:
  get = lambda field: _get(optimizer, field, prefix)
  _check_choice(get('name'), ('sgd', 'adamw'), prefix + 'name')
  for field in ('learning_rate', 'backbone_learning_rate', 'weight_decay', 'grad_clip_norm',
                'warmup_epochs'):
    _check_number(get(field), prefix + field, 0)
  _check_number(get('momentum'), prefix + 'momentum', 0, 1)
  _check_number(get('label_smoothing'), prefix + 'label_smoothing', 0, 1)
  _check_positive_int(get('base_batch_size'), prefix + 'base_batch_size')
  _check_bool(get('decay_norm_and_bias'), prefix + 'decay_norm_and_bias')


def validate_training_config(config: Any) -> None:
  """The run's top-level fields: batch sizes, length, logging, checkpoints, init."""
  get = lambda field: _get(config, field, '')
  for field in ('batch_size', 'num_epochs', 'log_every_steps', 'checkpoint_every_steps',
                'keep_checkpoints'):
    _check_positive_int(get(field), field)
  _check_non_negative_int(get('eval_batch_size'), 'eval_batch_size')
  _check_non_negative_int(get('seed'), 'seed')
  for field in ('num_train_steps', 'eval_every_steps'):
    value = get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < -1 or (
        field == 'num_train_steps' and value == 0):
      allowed = '-1 (from num_epochs) or a positive integer' if field == 'num_train_steps' else (
          '-1 (every epoch), 0 (only at the end) or a positive integer')
      raise ConfigError(f'{field}={value!r} is invalid; it must be {allowed}.')
  init = get('init')
  for field in ('torch_checkpoint', 'checkpoint', 'allowed_globals'):
    if not isinstance(_get(init, field, 'init.'), str):
      raise ConfigError(f'init.{field} must be a string (a path, or \'\').')
  _check_bool(_get(init, 'torch_backbone_only', 'init.'), 'init.torch_backbone_only')
  if _get(init, 'torch_checkpoint', 'init.') and _get(init, 'checkpoint', 'init.'):
    raise ConfigError('init.torch_checkpoint and init.checkpoint are both set; give one.')


def validate_visualize_config(visualize: Any, prefix: str = 'visualize.') -> None:
  """The attention figures: how many images, which query position, TensorBoard or not."""
  get = lambda field: _get(visualize, field, prefix)
  _check_positive_int(get('num_images'), prefix + 'num_images')
  _check_bool(get('every_eval'), prefix + 'every_eval')
  position = get('query_position')
  pair = tuple(position) if isinstance(position, (list, tuple)) else ()
  if len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               and 0 <= v <= 1 for v in pair):
    raise ConfigError(f'{prefix}query_position={position!r} is invalid; it must be (row, col) '
                      'fractions of the mid-level map in [0, 1], e.g. (0.5, 0.5) for the centre.')


def validate_config(config: Any) -> None:
  """Validates a whole configuration (configs/default.py's sections)."""
  validate_model_config(_get(config, 'model', ''))
  validate_dataset_config(_get(config, 'dataset', ''))
  validate_optimizer_config(_get(config, 'optimizer', ''))
  validate_training_config(config)
  validate_visualize_config(_get(config, 'visualize', ''))
