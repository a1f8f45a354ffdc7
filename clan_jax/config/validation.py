"""Validation of configuration values, with messages that name the field and the fix.

Pure Python: it reads attributes, so it accepts an ml_collections ConfigDict, a
dataclass or a SimpleNamespace alike, and it never imports ml_collections.
"""

import os
from typing import Any

from clan_jax.base.errors import ConfigError
# The model section's fields, choices and checks live with the model (the field reader and
# the checks are shared by every section).
from clan_jax.models.fields import (ModelConfig, check_bool, check_choice, check_image_size,
                                    check_positive_int, get_field)

AIRCRAFT_LABELS = ('variant', 'family', 'manufacturer')
# torchvision's ImageNet-1k V1 ResNet files by depth (ResNet{N}_Weights.IMAGENET1K_V1 in
# torchvision/models/resnet.py, torchvision >= 0.13; read in a GitHub copy of pytorch/vision,
# AidanGoldfarb/vision@18d67af). The recipes' expected accuracies assume these weights.
IMAGENET_V1_FILES = {18: 'resnet18-f37072fd.pth', 34: 'resnet34-b627a593.pth',
                     50: 'resnet50-0676ba61.pth', 101: 'resnet101-63fe2227.pth',
                     152: 'resnet152-394f9c45.pth'}
TORCHVISION_MODELS_URL = 'https://download.pytorch.org/models/'

def validate_model_config(model: Any, prefix: str = 'model.') -> None:
  """Raises ConfigError naming the first invalid field of a model section."""
  ModelConfig.from_section(model, prefix)


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

  get = lambda field: get_field(dataset, field, prefix)
  check_choice(get('name'), DATASET_NAMES, prefix + 'name')
  for field in ('data_dir', 'manual_dir', 'root', 'train_split', 'eval_split', 'val_split',
                'tfds_name', 'image_key', 'label_key'):
    if not isinstance(get(field), str):
      raise ConfigError(f'{prefix}{field}={get(field)!r} is invalid; it must be a string.')
  for field in ('train_split', 'eval_split'):
    if not get(field):
      raise ConfigError(f'{prefix}{field} is empty; name a split, e.g. train or test.')
  if get('name') == 'tfds' and not get('tfds_name'):
    raise ConfigError(f"{prefix}tfds_name is empty; {prefix}name='tfds' reads a stock TFDS "
                      "dataset: set it, e.g. --config.dataset.tfds_name=oxford_flowers102.")
  if get('name') == 'folder' and not get('root'):
    raise ConfigError(f"{prefix}root is empty; {prefix}name='folder' reads "
                      'root/<split>/<class>/<image>: set it to that folder.')
  _check_non_negative_int(get('num_classes'), prefix + 'num_classes')
  _check_non_negative_int(get('shuffle_seed'), prefix + 'shuffle_seed')
  check_positive_int(get('resize_size'), prefix + 'resize_size')
  check_image_size(get('crop_size'), prefix + 'crop_size')
  if get('resize_size') < get('crop_size'):
    raise ConfigError(f'{prefix}resize_size={get("resize_size")} is smaller than '
                      f'{prefix}crop_size={get("crop_size")}; the crop is taken from the '
                      'resized image.')
  check_bool(get('cache'), prefix + 'cache')
  if get('name') == 'synthetic':
    spec_from_config(get('synthetic'))
  check_choice(get('aircraft_label'), AIRCRAFT_LABELS, prefix + 'aircraft_label')
  check_bool(get('aircraft_crop_banner'), prefix + 'aircraft_crop_banner')
  augment = get('augment')
  for field in ('random_crop', 'flip', 'random_resized_crop'):
    check_bool(get_field(augment, field, prefix + 'augment.'), f'{prefix}augment.{field}')
  _check_fraction_range(get_field(augment, 'crop_area', prefix + 'augment.'),
                        f'{prefix}augment.crop_area')
  jitter = get_field(augment, 'color_jitter', prefix + 'augment.')
  if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
    raise ConfigError(f'{prefix}augment.color_jitter={jitter!r} is invalid; it must be in '
                      '[0, 1] (0: off).')


def _check_number(value: Any, name: str, low: float, high: float = float('inf')) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
    bounds = f'in [{low}, {high}]' if high != float('inf') else f'>= {low}'
    raise ConfigError(f'{name}={value!r} is invalid; it must be a number {bounds}.')


def validate_optimizer_config(optimizer: Any, prefix: str = 'optimizer.') -> None:
  get = lambda field: get_field(optimizer, field, prefix)
  check_choice(get('name'), ('sgd', 'adamw'), prefix + 'name')
  for field in ('learning_rate', 'backbone_learning_rate', 'weight_decay', 'grad_clip_norm',
                'warmup_epochs'):
    _check_number(get(field), prefix + field, 0)
  _check_number(get('momentum'), prefix + 'momentum', 0, 1)
  _check_number(get('label_smoothing'), prefix + 'label_smoothing', 0, 1)
  check_positive_int(get('base_batch_size'), prefix + 'base_batch_size')
  check_bool(get('decay_norm_and_bias'), prefix + 'decay_norm_and_bias')


def validate_training_config(config: Any) -> None:
  """The run's top-level fields: batch sizes, length, logging, checkpoints, init."""
  get = lambda field: get_field(config, field, '')
  for field in ('batch_size', 'num_epochs', 'log_every_steps', 'checkpoint_every_steps',
                'keep_checkpoints'):
    check_positive_int(get(field), field)
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
    if not isinstance(get_field(init, field, 'init.'), str):
      raise ConfigError(f'init.{field} must be a string (a path, or \'\').')
  check_bool(get_field(init, 'torch_backbone_only', 'init.'), 'init.torch_backbone_only')
  check_bool(get_field(init, 'from_scratch', 'init.'), 'init.from_scratch')
  check_bool(get_field(get('eval'), 'flip', 'eval.'), 'eval.flip')
  if get_field(init, 'torch_checkpoint', 'init.') and get_field(init, 'checkpoint', 'init.'):
    raise ConfigError('init.torch_checkpoint and init.checkpoint are both set; give one.')


def imagenet_weights_url(depth: int) -> str:
  """The official URL of torchvision's ImageNet-1k V1 ResNet of this depth."""
  return TORCHVISION_MODELS_URL + IMAGENET_V1_FILES[depth]


def missing_weights_message(path: str) -> str:
  """One line for a PyTorch weight file that is not there; for one of torchvision's ImageNet
  files (IMAGENET_V1_FILES), where to download it."""
  name = os.path.basename(path)
  where = (f'; download it from {TORCHVISION_MODELS_URL + name}'
           if name in IMAGENET_V1_FILES.values() else '')
  return f'{path}: no such checkpoint file{where}.'


def validate_training_start(config: Any) -> None:
  """The rule of a training run (not of evaluation): a real dataset starts from ImageNet
  weights, or from random ones only on purpose (init.from_scratch=True, never with weights).

  Call it after validate_config. Training from scratch on a few thousand fine-grained images
  costs the GPU hours and reaches a fraction of the accuracy; the synthetic dataset is exempt.
  """
  init = get_field(config, 'init', '')
  weights = [f'init.{field}={get_field(init, field, "init.")!r}'
             for field in ('torch_checkpoint', 'checkpoint') if get_field(init, field, 'init.')]
  if get_field(init, 'from_scratch', 'init.'):
    if weights:
      raise ConfigError(f'init.from_scratch=True (random initial weights) contradicts '
                        f'{weights[0]}; drop one of them.')
    return
  dataset = get_field(get_field(config, 'dataset', ''), 'name', 'dataset.')
  if weights or dataset == 'synthetic':
    return
  depth = get_field(get_field(config, 'model', ''), 'depth', 'model.')
  file = IMAGENET_V1_FILES[depth]
  raise ConfigError(
      f"dataset.name={dataset!r} trains from ImageNet weights, but neither "
      f"init.torch_checkpoint nor init.checkpoint is set: download torchvision's ImageNet-1k "
      f'ResNet-{depth} ({imagenet_weights_url(depth)}) and pass '
      f'--config.init.torch_checkpoint=PATH/{file}; --config.init.from_scratch=True trains '
      'from random weights on purpose (far lower accuracy).')


def validate_visualize_config(visualize: Any, prefix: str = 'visualize.') -> None:
  """The attention figures: how many images, which query position, TensorBoard or not, PNGs
  after training or not."""
  get = lambda field: get_field(visualize, field, prefix)
  check_positive_int(get('num_images'), prefix + 'num_images')
  check_bool(get('every_eval'), prefix + 'every_eval')
  check_bool(get('after_training'), prefix + 'after_training')
  position = get('query_position')
  pair = tuple(position) if isinstance(position, (list, tuple)) else ()
  if len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               and 0 <= v <= 1 for v in pair):
    raise ConfigError(f'{prefix}query_position={position!r} is invalid; it must be (row, col) '
                      'fractions of the mid-level map in [0, 1], e.g. (0.5, 0.5) for the centre.')


def validate_preflight_config(preflight: Any, prefix: str = 'preflight.') -> None:
  """--mode=preflight: how many images, the warning threshold, how many timed steps."""
  get = lambda field: get_field(preflight, field, prefix)
  check_positive_int(get('num_images'), prefix + 'num_images')
  check_positive_int(get('timing_steps'), prefix + 'timing_steps')
  _check_number(get('min_group_fraction'), prefix + 'min_group_fraction', 0, 1)


def validate_config(config: Any) -> None:
  """Validates a whole configuration (configs/default.py's sections)."""
  validate_model_config(get_field(config, 'model', ''))
  validate_dataset_config(get_field(config, 'dataset', ''))
  validate_optimizer_config(get_field(config, 'optimizer', ''))
  validate_training_config(config)
  validate_visualize_config(get_field(config, 'visualize', ''))
  validate_preflight_config(get_field(config, 'preflight', ''))
