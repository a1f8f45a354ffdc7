"""Parameter count and FLOPs of a configured model, from XLA's cost analysis.

    python -m clan_jax.summary --config=configs/default.py --image_size=448 --num_classes=200

Prints the configured model beside the plain ResNet of the same depth. FLOPs are XLA's
count for one forward pass of one image in eval mode; XLA counts a multiply-add as 2
FLOPs, so GMACs = GFLOPs / 2, and it leaves out the multiply-adds that fall on convolution
padding (published figures such as torchvision's include them: ResNet-18 at 224 px is
1.69 GMACs here, 1.81 there).
"""

import types

from absl import flags

from clan_jax.base import cli
from clan_jax.config.config_flag import explain_flag_error, load_config_flag


def _define_flags() -> None:
  from ml_collections import config_flags  # Late: see clan_jax/convert.py.

  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).')
  flags.DEFINE_integer('image_size', 448, 'Input size (a multiple of 32).')
  flags.DEFINE_integer('num_classes', 200, 'Classes K.')


def main(argv: list[str]) -> None:
  # Late: JAX and flax load only once the flags and the config are known to be valid.
  from clan_jax.perf.model_cost import model_cost

  del argv
  flags_ = flags.FLAGS
  config = load_config_flag(flags_.config)
  resnet = types.SimpleNamespace(**{**config.model.to_dict(), 'name': 'resnet'})
  # Both costs first: an invalid size or config fails before any of the table is printed.
  costs = [model_cost(model_config, flags_.num_classes, flags_.image_size)
           for model_config in (config.model, resnet)]
  print(f'{"model":<12} {"params":>12} {"GFLOPs (XLA)":>13} {"GMACs":>8}   '
        f'({flags_.image_size} px, {flags_.num_classes} classes, one image)')
  for cost in costs:
    print(f'{cost.name:<12} {cost.params:>12,} {cost.flops / 1e9:>13.2f} {cost.gmacs:>8.2f}')



def run() -> None:
  """The console command `clan-summary`."""
  _define_flags()
  cli.run(main, explain_flag_error)


if __name__ == '__main__':
  run()
