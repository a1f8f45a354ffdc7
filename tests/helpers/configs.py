"""Configs for tests: a dataset section with overrides; a config file's config."""

import copy
import importlib.util

from configs import default


def dataset_config(base=None, **overrides):
  """A copy of `base` (default: configs/default.py's dataset section) with overrides.

  Nested keys are written 'augment.flip'.
  """
  config = copy.deepcopy(base) if base is not None else default.get_dataset_config()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def load_config_file(path):
  """get_config() of a config file (such as a trained workdir's tiny_config.py)."""
  spec = importlib.util.spec_from_file_location('config_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
