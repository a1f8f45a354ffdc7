"""Every shipped config loads, validates, and opens with its command and expected result."""

import importlib

import pytest

from clan_jax.config.validation import validate_config
from helpers.commands import REPO_ROOT

CONFIGS = ['default', 'cub', 'cars', 'aircraft', 'dogs', 'demo']


@pytest.mark.parametrize('name', CONFIGS)
def test_config_is_valid_and_documented(name):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config()
  validate_config(config)
  doc = module.__doc__ or ''
  assert f'--config=configs/{name}.py' in doc or (name == 'demo' and 'make demo' in doc)
  assert 'Expected' in doc or name == 'default'


def test_recipes_use_their_dataset_and_splits():
  expected = {'cub': ('cub', 'train'), 'cars': ('cars', 'train'),
              'aircraft': ('aircraft', 'trainval'), 'dogs': ('dogs', 'train'),
              'demo': ('synthetic', 'train')}
  for name, (dataset, split) in expected.items():
    config = importlib.import_module(f'configs.{name}').get_config()
    assert (config.dataset.name, config.dataset.train_split) == (dataset, split)
  assert (REPO_ROOT / 'configs' / 'demo.py').exists()
