"""Parameter count and FLOPs of a configured model, from XLA's cost analysis.

    python -m clan_jax.summary --config=configs/default.py --image_size=448 --num_classes=200

Prints the configured model beside the plain ResNet of the same depth. FLOPs are XLA's
count for one forward pass of one image in eval mode; XLA counts a multiply-add as 2
FLOPs, so GMACs = GFLOPs / 2, and it leaves out the multiply-adds that fall on convolution
padding (published figures such as torchvision's include them: ResNet-18 at 224 px is
1.69 GMACs here, 1.81 there).
"""

import dataclasses
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ModelCost:
  name: str
  params: int
  flops: float  # XLA's count: 2 per multiply-add.

  @property
  def gmacs(self) -> float:
    return self.flops / 2e9


def model_cost(model_config: Any, num_classes: int, image_size: int) -> ModelCost:
  """Parameters (eval_shape) and forward FLOPs per image (compiled cost analysis)."""
  from clan_jax.models import create_model
  from clan_jax.convert import abstract_variables

  model = create_model(model_config, num_classes)
  variables = abstract_variables(model, image_size)
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables['params']))
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax returns one dict per device.
    analysis = analysis[0]
  name = (f'CLAN-R{model_config.depth}' if model_config.name == 'clan'
          else f'ResNet-{model_config.depth}')
  return ModelCost(name, params, float(analysis['flops']))


def main(argv: list[str]) -> None:
  from absl import flags

  from clan_jax.base import cli

  del argv
  flags_ = flags.FLAGS
  config = cli.load_config_flag(flags_.config)
  resnet = types.SimpleNamespace(**{**config.model.to_dict(), 'name': 'resnet'})
  # Both costs first: an invalid size or config fails before any of the table is printed.
  costs = [model_cost(model_config, flags_.num_classes, flags_.image_size)
           for model_config in (config.model, resnet)]
  print(f'{"model":<12} {"params":>12} {"GFLOPs (XLA)":>13} {"GMACs":>8}   '
        f'({flags_.image_size} px, {flags_.num_classes} classes, one image)')
  for cost in costs:
    print(f'{cost.name:<12} {cost.params:>12,} {cost.flops / 1e9:>13.2f} {cost.gmacs:>8.2f}')


if __name__ == '__main__':
  from absl import flags
  from ml_collections import config_flags

  from clan_jax.base import cli

  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).')
  flags.DEFINE_integer('image_size', 448, 'Input size (a multiple of 32).')
  flags.DEFINE_integer('num_classes', 200, 'Classes K.')
  cli.run(main)
