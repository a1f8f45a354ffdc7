r"""Command: a PyTorch checkpoint -> an Orbax variables checkpoint of the configured model.

    python -m clan_jax.convert --torch_checkpoint=resnet50.pth --config=configs/cub.py \
        --output=/tmp/clan_r50_init [--backbone_only] [--num_classes=200]

The conversion itself (rule tables, safe loading) is clan_jax/pytorch/conversion.py; its
public functions are re-exported here, the documented import path.
"""

import logging

import jax
import numpy as np
from absl import flags

from clan_jax.base import cli
from clan_jax.base.errors import UserError
from clan_jax.config.config_flag import load_config_flag
from clan_jax.models import create_model
from clan_jax.pytorch.conversion import (abstract_variables, flax_to_torch,
                                         flax_to_torch_arrays, infer_num_classes,
                                         load_torch_checkpoint, tensor_to_numpy, torch_to_flax)
from clan_jax.train import checkpoints


# The documented Python API (README, docs/PARITY.md) keeps this import path.
__all__ = ['abstract_variables', 'flax_to_torch', 'flax_to_torch_arrays', 'infer_num_classes',
           'load_torch_checkpoint', 'tensor_to_numpy', 'torch_to_flax']


def _define_flags() -> None:
  # Late: the re-exported library stays importable without ml_collections (a bare GPU image).
  from ml_collections import config_flags

  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py) naming the model.')
  flags.DEFINE_string('torch_checkpoint', None, 'PyTorch checkpoint (.pth, .pt or .safetensors).')
  flags.DEFINE_string('output', None, 'Directory of the Orbax checkpoint to write (must not exist).')
  flags.DEFINE_integer('num_classes', 0, "Classes K; 0: the checkpoint's fc rows.",
                       lower_bound=0)
  flags.DEFINE_bool('backbone_only', False,
                    'Load only the backbone (e.g. ImageNet weights) and initialise the rest.')
  flags.DEFINE_list('allow_global', [], 'Python globals to allow in the .pth file, if you trust it.')
  flags.DEFINE_integer('seed', 0, 'Seed of the initialisation of the parts not loaded.')


def main(argv: list[str]) -> None:
  del argv
  flags_ = flags.FLAGS
  config = load_config_flag(flags_.config)
  for name in ('torch_checkpoint', 'output'):
    if not getattr(flags_, name):
      raise UserError(f'--{name} is required.')
  arrays = load_torch_checkpoint(flags_.torch_checkpoint, flags_.allow_global)
  num_classes = infer_num_classes(arrays, flags_.num_classes, flags_.backbone_only)
  model = create_model(config.model, num_classes)
  variables = torch_to_flax(arrays, model, backbone_only=flags_.backbone_only,
                            rng=jax.random.PRNGKey(flags_.seed))
  path = checkpoints.save_variables(variables, flags_.output)
  count = sum(np.size(x) for x in jax.tree.leaves(variables['params']))
  logging.info('wrote %s: %s, %d classes, %d parameters%s', path, config.model.name,
               num_classes, count, ' (backbone from the checkpoint)' if flags_.backbone_only
               else '')
  print(path)


def run() -> None:
  """The console command `clan-convert`."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  run()
