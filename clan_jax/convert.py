r"""Command: a PyTorch checkpoint -> an Orbax variables checkpoint of the configured model, or
a trained workdir -> the PyTorch twin's state_dict.

    python -m clan_jax.convert --torch_checkpoint=resnet50.pth --config=configs/cub.py \
        --output=/tmp/clan_r50_init [--backbone_only] [--num_classes=200]
    python -m clan_jax.convert --workdir=runs/cub [--checkpoint=latest|best] \
        --output=clan_cub.safetensors|.pth

The export writes every key of the twin (clan_jax/pytorch/twin.py, the spec's names), so
`create_torch_model(model section, K).load_state_dict(..., strict=True)` takes it; a
.safetensors file also holds the model section and the class names as metadata
(docs/PARITY.md, *Export a trained model*).

The conversion itself (rule tables, safe loading) is clan_jax/pytorch/conversion.py; its
public functions are re-exported here, the documented import path.
"""

import json
import logging

import jax
import numpy as np
from absl import flags

from clan_jax.base import cli
from clan_jax.base.errors import UserError
from clan_jax.base.workdirs import read_run_config
from clan_jax.config.config_flag import explain_flag_error, load_config_flag
from clan_jax.models import create_model
from clan_jax.pytorch.conversion import (abstract_variables, check_state_dict_output,
                                         flax_to_state_dict_arrays, flax_to_torch,
                                         flax_to_torch_arrays, infer_num_classes,
                                         load_torch_checkpoint, save_state_dict,
                                         tensor_to_numpy, torch_to_flax)
from clan_jax.train import checkpoints


# The documented Python API (README, docs/PARITY.md) keeps this import path.
__all__ = ['abstract_variables', 'flax_to_state_dict_arrays', 'flax_to_torch',
           'flax_to_torch_arrays', 'infer_num_classes', 'load_torch_checkpoint', 'save_state_dict',
           'tensor_to_numpy', 'torch_to_flax']


def _define_flags() -> None:
  # Late: the re-exported library stays importable without ml_collections (a bare GPU image).
  from ml_collections import config_flags

  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py) naming the model.')
  flags.DEFINE_string('torch_checkpoint', None, 'PyTorch checkpoint (.pth, .pt or .safetensors).')
  flags.DEFINE_string('output', None, 'What to write (must not exist): with --torch_checkpoint, '
                      'the Orbax checkpoint directory; with --workdir, FILE.safetensors or '
                      'FILE.pth (the twin\'s state_dict).')
  flags.DEFINE_string('workdir', '', 'A training workdir to export to PyTorch (its config.json, '
                      'classes.json, checkpoints/), instead of --torch_checkpoint.')
  flags.DEFINE_string('checkpoint', 'latest', 'With --workdir: ' + cli.CHECKPOINT_HELP)
  flags.DEFINE_integer('num_classes', 0, "Classes K; 0: the checkpoint's fc rows.",
                       lower_bound=0)
  flags.DEFINE_bool('backbone_only', False,
                    'Load only the backbone (e.g. ImageNet weights) and initialise the rest.')
  flags.DEFINE_list('allow_global', [], 'Python globals to allow in the .pth file, if you trust it.')
  flags.DEFINE_integer('seed', 0, 'Seed of the initialisation of the parts not loaded.')


def main(argv: list[str]) -> None:
  del argv
  flags_ = flags.FLAGS
  if flags_.workdir:
    export_workdir(flags_)
    return
  if flags_['checkpoint'].present:
    raise UserError('--checkpoint names a checkpoint of --workdir: give --workdir=DIR too.')
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


def export_workdir(flags_) -> None:
  """The model trained in --workdir -> the twin's state_dict in --output."""
  extra = [f'--{name}' for name in ('torch_checkpoint', 'config', 'backbone_only', 'num_classes')
           if flags_[name].present]
  if extra:
    raise UserError(f'--workdir exports the run as trained (its config.json and classes.json): '
                    f'drop {", ".join(extra)}.')
  if not flags_.output:
    raise UserError('--output=FILE.safetensors (or FILE.pth, which needs torch) is required.')
  output = check_state_dict_output(flags_.output)
  # Late: the predictor's loading needs ml_collections and TFDS, absent from a bare GPU image.
  from clan_jax.inference import predictor as library

  predictor = library.predictor_from_workdir(flags_.workdir, flags_.checkpoint)
  config = read_run_config(flags_.workdir)
  arrays = flax_to_state_dict_arrays(predictor.variables, predictor.model,
                                     image_size=predictor.crop_size)
  metadata = {'format': 'pt', 'clan_jax.model': json.dumps(config.model.to_dict()),
              'clan_jax.classes': json.dumps(predictor.class_names),
              'clan_jax.source': predictor.source}
  path = save_state_dict(arrays, output, metadata)
  logging.info('wrote %s: %s, %d classes, from %s', path, config.model.name,
               len(predictor.class_names), predictor.source)
  print(path)


def run() -> None:
  """The console command `clan-convert`."""
  _define_flags()
  cli.run(main, explain_flag_error)


if __name__ == '__main__':
  run()
