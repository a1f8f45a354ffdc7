"""Where the variables of a model for inference come from: one choice, spelled the same way by
`python main.py --mode=eval|visualize`, predict and parity (`--checkpoint`):

    latest | best   a training workdir's newest checkpoint, or its best evaluated one
    PATH            a variables checkpoint folder (written by clan_jax.convert), or a PyTorch
                    file of the whole model (.pth, .pt, .bin, .safetensors)

An ImageNet backbone file (the training's init.torch_checkpoint with torch_backbone_only) is
never a source: it does not hold the model being evaluated.
"""

import dataclasses
import os
from typing import Any, Optional, Sequence

import jax

from clan_jax.base.cli import CHECKPOINT_HELP
from clan_jax.base.errors import CheckpointError, UserError
from clan_jax.base.workdirs import did_you_mean
from clan_jax.pytorch.conversion import (abstract_variables, load_torch_checkpoint,
                                         torch_to_flax)
from clan_jax.train import checkpoints

RUN_CHECKPOINTS = ('latest', 'best')
OTHER_SOURCES = ', or give --checkpoint=PATH (a variables checkpoint or a PyTorch file)'
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors')


@dataclasses.dataclass(frozen=True)
class LoadedVariables:
  variables: dict  # {'params', 'batch_stats'}
  source: str  # 'latest', 'best', 'torch' or 'variables': eval_results.json's protocol.
  step: int  # The training step of a run's checkpoint; 0 for a file.
  description: str  # For the log: what was read, from where.


def is_torch_file(path: str) -> bool:
  return path.lower().endswith(TORCH_SUFFIXES)


def check_checkpoint_choice(choice: str) -> None:
  """A UserError for an empty choice, or a path that is neither a folder nor a torch file."""
  if choice in RUN_CHECKPOINTS:
    return
  if not choice:
    raise UserError(f'--checkpoint is empty. {CHECKPOINT_HELP}')
  path = os.path.expanduser(choice)
  if not (os.path.isdir(path) or is_torch_file(path)):
    raise UserError(f'--checkpoint={choice}: no such checkpoint folder, and not a PyTorch file '
                    f'({", ".join(TORCH_SUFFIXES)}). {CHECKPOINT_HELP}')


def evaluation_choice(config: Any, checkpoint: Optional[str]) -> str:
  """What --mode=eval and --mode=visualize read: --checkpoint if given; else a whole-model
  PyTorch file named by init.torch_checkpoint (torch_backbone_only=False); else 'latest'."""
  if checkpoint:
    return checkpoint
  init = config.init
  if init.torch_checkpoint and not init.torch_backbone_only:
    return init.torch_checkpoint
  return 'latest'


def abstract_model_variables(model: Any, image_size: int, sharding: Any) -> dict:
  """The model's {'params', 'batch_stats'} as shapes laid out with `sharding` (no compute)."""
  abstract = abstract_variables(model, image_size)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      dict(abstract))


def load_inference_variables(choice: str, model: Any, *, image_size: int, sharding: Any,
                             workdir: str = '',
                             allowed_globals: Sequence[str] = ()) -> LoadedVariables:
  """The variables of `choice` for `model`, placed with `sharding`; CheckpointError naming
  every mismatch if they do not fit."""
  check_checkpoint_choice(choice)
  if choice in RUN_CHECKPOINTS:
    directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    if not os.path.isdir(directory):
      hint = did_you_mean(workdir) if workdir else ''  # A folder of runs, or one in a run.
      raise CheckpointError(f'no checkpoint in {directory} (no such folder)'
                            f'{f".{hint} Else" if hint else ";"} train first '
                            f'(python main.py --config=... --workdir=...){OTHER_SOURCES}.')
    variables, step = checkpoints.load_run_variables(
        directory, choice, lambda: abstract_model_variables(model, image_size, sharding),
        OTHER_SOURCES)
    return LoadedVariables(variables, choice, int(step),
                           f'{os.path.abspath(workdir)}, checkpoint step {step} ({choice})')
  path = os.path.abspath(os.path.expanduser(choice))
  if is_torch_file(path):
    arrays = load_torch_checkpoint(path, list(allowed_globals))
    variables, source = torch_to_flax(arrays, model, image_size=image_size), 'torch'
  else:
    variables = checkpoints.load_variables_checkpoint_like(
        path, abstract_variables(model, image_size), path)
    source = 'variables'
  return LoadedVariables(jax.device_put(variables, sharding), source, 0, path)

