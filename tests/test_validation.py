"""configs/default.py and the validation of every model field."""

import types

import pytest

from clan_jax.base.errors import ConfigError
from clan_jax.config.validation import (check_image_size, validate_config, validate_model_config,
                                        validate_training_start)
from clan_jax.datasets import DATASET_NAMES
from configs import default


def _walk(config, prefix=''):
  for key, value in config.items():
    if hasattr(value, 'items'):
      yield from _walk(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def test_default_config_is_valid_and_has_no_none():
  config = default.get_config()
  validate_config(config)
  nones = [name for name, value in _walk(config) if value is None]
  assert not nones, f'fields defaulting to None cannot be overridden from the command line: {nones}'


def test_model_section_has_every_spec_field():
  model = default.get_model_config()
  assert set(model.keys()) >= {'name', 'depth', 'mid_stages', 'use_clca', 'use_clsa',
                               'clca_kind', 'clca_dim', 'clca_heads', 'head_dim', 'fusion',
                               'head_loss_weights', 'dtype'}
  assert model.mid_stages == (2, 3) and model.clca_dim == 256 and model.head_dim == 512


@pytest.mark.parametrize('field, value, expected', [
    ('name', 'vit', "model.name='vit' is invalid; allowed values: 'clan', 'resnet'"),
    ('depth', 77, 'model.depth=77 is invalid; allowed values: 18, 34, 50, 101, 152'),
    ('depth', True, 'model.depth=True is invalid'),
    ('dtype', 'float16', "allowed values: 'auto', 'float32', 'bfloat16'"),
    ('clca_kind', 'nonlocal', "allowed values: 'cross_attention', 'global_context'"),
    ('fusion', 'max', "model.fusion='max' is invalid; allowed values: 'sum', 'top', 'concat'"),
    ('mid_stages', (3, 2), 'model.mid_stages=(3, 2) is invalid; it must be a non-empty, sorted'),
    ('mid_stages', (), 'model.mid_stages=() is invalid'),
    ('mid_stages', (2, 4), 'model.mid_stages=(2, 4) is invalid'),
    ('mid_stages', (2, 2), 'model.mid_stages=(2, 2) is invalid'),
    ('use_clca', 'yes', "model.use_clca='yes' is invalid; it must be True or False"),
    ('clca_dim', 0, 'model.clca_dim=0 is invalid; it must be a positive integer'),
    ('clca_heads', 3, 'model.clca_dim=256 is not divisible by model.clca_heads=3'),
    ('head_dim', -1, 'model.head_dim=-1 is invalid'),
    ('head_loss_weights', {'top': 1.0}, "model.head_loss_weights={'top': 1.0} is invalid"),
    ('head_loss_weights', {'top': 1.0, 'mid': -1.0, 'concat': 1.0},
     'model.head_loss_weights.mid=-1.0 is invalid'),
    ('head_loss_weights', {'top': 0.0, 'mid': 0.0, 'concat': 0.0}, 'are all zero'),
    ('clca_order', 'reversed', "model.clca_order='reversed' is invalid; allowed values: "
     "'auto', 'standard', 'folded'"),
    ('bn_impl', 'fast', "model.bn_impl='fast' is invalid; allowed values: 'auto', 'two_pass', "
     "'custom_vjp'"),
    ('downsample_impl', 'pool', "model.downsample_impl='pool' is invalid; allowed values: "
     "'auto', 'slice_matmul', 'conv'"),
    ('stem_channels', 5, "model.stem_channels=5 is invalid; allowed values: 'auto', 3, 4, 8"),
    ('stem_channels', '4', "model.stem_channels='4' is invalid"),
    ('stem_channels', True, 'model.stem_channels=True is invalid'),
    ('clsa_impl', 'fft', "model.clsa_impl='fft' is invalid; allowed values: 'auto', 'conv', "
     "'taps', 'im2col'"),
])
def test_invalid_model_values_name_the_field_and_the_allowed_values(field, value, expected):
  # A plain namespace: ConfigDict's own type checks would refuse some values first.
  model = types.SimpleNamespace(**default.get_model_config().to_dict())
  setattr(model, field, value)
  with pytest.raises(ConfigError) as error:
    validate_model_config(model)
  assert expected in str(error.value)


def test_any_object_with_the_fields_is_accepted():
  fields = default.get_model_config().to_dict()
  validate_model_config(types.SimpleNamespace(**fields))
  validate_model_config(fields)
  del fields['fusion']
  with pytest.raises(ConfigError, match='model.fusion is missing'):
    validate_model_config(fields)


def test_a_config_saved_before_clca_order_existed_still_loads():
  from clan_jax.models import create_model

  fields = default.get_model_config().to_dict()
  del fields['clca_order']  # A run's config.json from before the field.
  validate_model_config(fields)
  assert create_model(fields, 5).clca_order == 'auto'


@pytest.mark.parametrize('size', [448, 224, 64, 32])
def test_image_sizes_multiple_of_32_pass(size):
  check_image_size(size)


@pytest.mark.parametrize('size, hint', [(450, 'use e.g. 448 or 480'), (20, 'use e.g. 32 or 64')])
def test_other_image_sizes_fail_with_a_suggestion(size, hint):
  with pytest.raises(ConfigError, match=hint):
    check_image_size(size)


@pytest.mark.parametrize('field, value, expected', [
    ('name', 'imagenet', "dataset.name='imagenet' is invalid; allowed values: 'cub', 'cars'"),
    ('crop_size', 450, 'dataset.crop_size=450 is not a multiple of 32'),
    ('resize_size', 400, 'dataset.resize_size=400 is smaller than dataset.crop_size=448'),
    ('num_classes', -1, 'dataset.num_classes=-1 is invalid'),
    ('cache', 'yes', "dataset.cache='yes' is invalid; it must be True or False"),
    ('eval_split', '', 'dataset.eval_split is empty'),
    ('augment.crop_area', (0.5, 1.5), 'dataset.augment.crop_area=(0.5, 1.5) is invalid'),
    ('augment.color_jitter', 2.0, 'dataset.augment.color_jitter=2.0 is invalid'),
    ('augment.flip', 1, 'dataset.augment.flip=1 is invalid'),
])
def test_invalid_dataset_values_name_the_field(field, value, expected):
  from clan_jax.config.validation import validate_dataset_config

  dataset = default.get_dataset_config().to_dict()
  node, *rest = field.split('.')
  if rest:
    dataset[node] = types.SimpleNamespace(**{**dataset[node], rest[0]: value})
  else:
    dataset[field] = value
  with pytest.raises(ConfigError) as error:
    validate_dataset_config(types.SimpleNamespace(**dataset))
  assert expected in str(error.value)


def test_folder_needs_a_root_and_synthetic_knobs_are_checked():
  from clan_jax.config.validation import validate_dataset_config

  dataset = default.get_dataset_config()
  dataset.name = 'folder'
  with pytest.raises(ConfigError, match='dataset.root is empty'):
    validate_dataset_config(dataset)
  dataset.name = 'synthetic'
  dataset.synthetic.num_classes = 1
  with pytest.raises(ConfigError, match='dataset.synthetic: .*num_classes'):
    validate_dataset_config(dataset)


def test_aircraft_label_level_is_checked():
  from clan_jax.config.validation import validate_dataset_config

  dataset = default.get_dataset_config()
  dataset.aircraft_label = 'model'
  with pytest.raises(ConfigError, match="allowed values: 'variant', 'family', 'manufacturer'"):
    validate_dataset_config(dataset)


@pytest.mark.parametrize('field, value, expected', [
    ('num_images', 0, 'visualize.num_images=0 is invalid; it must be a positive integer'),
    ('query_position', (0.5,), 'visualize.query_position=(0.5,) is invalid; it must be (row, col)'),
    ('query_position', (0.5, 1.5), 'visualize.query_position=(0.5, 1.5) is invalid'),
    ('every_eval', 'yes', "visualize.every_eval='yes' is invalid; it must be True or False"),
])
def test_invalid_visualize_values_name_the_field(field, value, expected):
  from clan_jax.config.validation import validate_visualize_config

  visualize = types.SimpleNamespace(**default.get_visualize_config().to_dict())
  validate_visualize_config(visualize)
  setattr(visualize, field, value)
  with pytest.raises(ConfigError) as error:
    validate_visualize_config(visualize)
  assert expected in str(error.value)


# Training's own rule (validate_training_start): ImageNet weights on real data.

def _training_config(dataset='cub', depth=50, **init):
  config = default.get_config()
  config.dataset.update(name=dataset, root='images', tfds_name='oxford_flowers102')
  config.model.depth = depth
  config.init.update(init)
  return config


@pytest.mark.parametrize('dataset', sorted(set(DATASET_NAMES) - {'synthetic'}))
def test_real_datasets_refuse_to_train_without_imagenet_weights(dataset):
  config = _training_config(dataset)
  validate_config(config)  # Evaluation, prediction and the other modes are not concerned.
  with pytest.raises(ConfigError) as error:
    validate_training_start(config)
  message = str(error.value)
  assert '\n' not in message
  for expected in (f'dataset.name={dataset!r}',
                   'https://download.pytorch.org/models/resnet50-0676ba61.pth',
                   '--config.init.torch_checkpoint=PATH/resnet50-0676ba61.pth',
                   '--config.init.from_scratch=True trains from random weights on purpose'):
    assert expected in message


@pytest.mark.parametrize('depth, file', [(18, 'resnet18-f37072fd.pth'),
                                         (34, 'resnet34-b627a593.pth'),
                                         (101, 'resnet101-63fe2227.pth'),
                                         (152, 'resnet152-394f9c45.pth')])
def test_the_message_names_the_v1_file_of_the_configured_depth(depth, file):
  with pytest.raises(ConfigError, match=f'ResNet-{depth} .*/models/{file}.*=PATH/{file};'):
    validate_training_start(_training_config(depth=depth))


@pytest.mark.parametrize('dataset, init', [
    ('cub', {'torch_checkpoint': 'resnet50-11ad3fa6.pth'}),  # V2, timm .safetensors: alike.
    ('cars', {'checkpoint': 'converted/'}),
    ('dogs', {'from_scratch': True}),
    ('synthetic', {}),
    ('synthetic', {'from_scratch': True}),
])
def test_weights_from_scratch_on_purpose_or_synthetic_data_may_train(dataset, init):
  validate_training_start(_training_config(dataset, **init))


@pytest.mark.parametrize('init, named', [
    ({'torch_checkpoint': 'w.safetensors'}, "init.torch_checkpoint='w.safetensors'"),
    ({'checkpoint': 'converted/'}, "init.checkpoint='converted/'"),
])
def test_from_scratch_with_weights_is_a_contradiction(init, named):
  for dataset in ('cub', 'synthetic'):
    with pytest.raises(ConfigError, match=f'init.from_scratch=True .*contradicts {named}; '
                       'drop one of them'):
      validate_training_start(_training_config(dataset, from_scratch=True, **init))
