"""Every shipped config loads, validates, and opens with its command and expected result."""

import importlib

import pytest

from clan_jax.base.errors import ConfigError
from clan_jax.config.validation import validate_config
from helpers.commands import REPO_ROOT

CONFIGS = ['default', 'cub', 'cars', 'aircraft', 'dogs', 'demo', 'folder_small']
REAL_DATASET_RECIPES = ['cub', 'cars', 'aircraft', 'dogs']
# CLAN_SPEC v2's recipe (docs/MODEL.md, "Training recipe"): what the recipes must train with.
SPEC_V2_OPTIMIZER = dict(name='sgd', learning_rate=0.01, backbone_learning_rate=0.001,
                         base_batch_size=16, momentum=0.9, weight_decay=5e-4,
                         warmup_epochs=5.0)
WEIGHTS_URL = 'https://download.pytorch.org/models/resnet50-0676ba61.pth'


@pytest.mark.parametrize('name', CONFIGS)
def test_config_is_valid_and_documented(name, tmp_path):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config()
  if config.dataset.name == 'folder':  # The user's folder: --config.dataset.root=DIR.
    config.dataset.root = str(tmp_path)
  validate_config(config)
  doc = module.__doc__ or ''
  assert f'--config=configs/{name}.py' in doc or (name == 'demo' and 'make demo' in doc)
  assert 'Expected' in doc or name == 'default'


def test_recipes_use_their_dataset_and_splits():
  expected = {'cub': ('cub', 'train'), 'cars': ('cars', 'train'),
              'aircraft': ('aircraft', 'trainval'), 'dogs': ('dogs', 'train'),
              'demo': ('synthetic', 'train'), 'folder_small': ('folder', 'train')}
  for name, (dataset, split) in expected.items():
    config = importlib.import_module(f'configs.{name}').get_config()
    assert (config.dataset.name, config.dataset.train_split) == (dataset, split)
  assert (REPO_ROOT / 'configs' / 'demo.py').exists()


@pytest.mark.parametrize('name', REAL_DATASET_RECIPES)
def test_real_dataset_recipes_train_with_spec_v2(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  optimizer = {key: config.optimizer[key] for key in SPEC_V2_OPTIMIZER}
  assert optimizer == SPEC_V2_OPTIMIZER
  assert (config.batch_size, config.num_epochs, config.num_train_steps) == (16, 100, -1)
  assert (config.dataset.resize_size, config.dataset.crop_size) == (512, 448)
  assert not config.init.from_scratch


@pytest.mark.parametrize('name', REAL_DATASET_RECIPES)
def test_real_dataset_recipes_say_how_to_start(name):
  """The docstring names the weights file with its URL, the preflight and the from-scratch
  switch, and states the protocol of the expected result."""
  doc = importlib.import_module(f'configs.{name}').__doc__
  for needle in (WEIGHTS_URL, '--config.init.torch_checkpoint=resnet50-0676ba61.pth',
                 f'--config=configs/{name}.py --workdir=runs/{name} --mode=preflight',
                 '--config.init.from_scratch=True', 'final checkpoint, single centre crop'):
    assert needle in ' '.join(doc.split()), needle


def test_folder_small_is_the_demos_model_on_your_folder():
  """CPU-sized: the demo's model, small images, few epochs; the folder is the user's to give."""
  from configs import demo, folder_small

  config = folder_small.get_config()
  for key in ('depth', 'clca_dim', 'head_dim'):
    assert config.model[key] == demo.get_config().model[key], key
  assert config.dataset.crop_size <= 128 and config.num_epochs <= 20
  assert config.optimizer.name == 'adamw' and config.visualize.after_training
  with pytest.raises(ConfigError, match=r"dataset.root is empty; dataset.name='folder' reads"):
    validate_config(config)
  doc = ' '.join(folder_small.__doc__.split())
  assert '--config.dataset.root=' in doc and '--config.init.from_scratch=True' in doc
