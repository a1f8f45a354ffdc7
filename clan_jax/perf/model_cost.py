"""A model's parameter count and forward FLOPs, from XLA's cost analysis (the command:
clan_jax/summary.py). XLA counts a multiply-add as 2 FLOPs and leaves out the multiply-adds
that fall on convolution padding."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clan_jax.models import create_model
from clan_jax.perf.step_benchmark import cost_analysis
from clan_jax.pytorch.conversion import abstract_variables


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
  model = create_model(model_config, num_classes)
  variables = abstract_variables(model, image_size)
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables['params']))
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images).compile()
  analysis = cost_analysis(compiled)
  name = (f'CLAN-R{model_config.depth}' if model_config.name == 'clan'
          else f'ResNet-{model_config.depth}')
  return ModelCost(name, params, float(analysis['flops']))
