"""Configs for tests: a dataset section with overrides."""

import copy

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
