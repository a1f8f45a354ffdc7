r"""Checks that the Flax model reproduces the PyTorch twin on the same weights.

    python -m clan_jax.parity --torch_checkpoint=resnet50.pth --config=configs/default.py \
        --config.model.name=resnet --config.model.depth=50 [IMAGE ...]
    python -m clan_jax.parity --workdir=runs/cub [--checkpoint=latest|best|PATH] [IMAGE ...]

The weights: a PyTorch file as it is (--torch_checkpoint, with --config), or any model that
--checkpoint names, as for `main.py --mode=eval` and predict (clan_jax/inference/
model_source.py: latest or best of --workdir, or a variables checkpoint or PyTorch file with
--config), converted to the twin's layout.

Both models run in eval mode on the images (eval preprocessing of clan_jax.datasets.preprocess)
or, without images, on seeded random inputs. For each output (fused logits, every
stage's features, and CLAN's heads and maps) it prints max|ref| (the scale, from the
twin), max|diff| and their ratio, and exits with status 1 if a ratio exceeds --tolerance.
In float32 the two frameworks agree to about 1e-6 of each output's scale
(docs/PARITY.md); --tolerance defaults to 1e-4, which leaves margin for larger inputs.
"""

import jax
from absl import flags, logging

from clan_jax.base import cli
from clan_jax.base.errors import UserError
from clan_jax.base.workdirs import read_run_config
from clan_jax.config.config_flag import explain_flag_error, load_config_flag
from clan_jax.pytorch.conversion import (flax_to_state_dict_arrays, infer_num_classes,
                                         load_torch_checkpoint)
from clan_jax.pytorch.parity_check import format_table, parity_inputs, run_parity


def _define_flags() -> None:
  from ml_collections import config_flags  # Late: see clan_jax/convert.py.

  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py) naming the model.')
  flags.DEFINE_string('torch_checkpoint', None, 'PyTorch checkpoint (.pth, .pt or .safetensors).')
  flags.DEFINE_string('workdir', '', 'A training workdir (config.json, classes.json, '
                      'checkpoints/), instead of --torch_checkpoint.')
  flags.DEFINE_string('checkpoint', 'latest', cli.CHECKPOINT_HELP + ' A path without --workdir '
                      'needs --config.')
  flags.DEFINE_integer('num_classes', 0, "Classes K; 0: the checkpoint's fc rows.",
                       lower_bound=0)
  flags.DEFINE_integer('image_size', 224, 'Input size (crop); a multiple of 32.', lower_bound=32)
  flags.DEFINE_integer('resize_size', 256, 'Images are resized to this, then centre-cropped.',
                       lower_bound=32)
  flags.DEFINE_integer('batch_size', 2, 'Random inputs when no image is given.', lower_bound=1)
  flags.DEFINE_integer('seed', 0, 'Seed of the random inputs.')
  flags.DEFINE_float('tolerance', 1e-4, 'Largest max|diff| / max|ref| accepted per output.',
                     lower_bound=0.0)
  flags.DEFINE_list('allow_global', [], 'Python globals to allow in the .pth file, if you trust it.')


def _weights(flags_, config) -> tuple[dict, object, int]:
  """(the weights in the twin's layout, the model section, K)."""
  by_checkpoint = flags_.workdir or flags_['checkpoint'].present
  if flags_.torch_checkpoint and by_checkpoint:
    raise UserError('give --torch_checkpoint, or --workdir / --checkpoint, not both.')
  if flags_.torch_checkpoint or not by_checkpoint:
    if not flags_.torch_checkpoint:
      raise UserError('give --torch_checkpoint=PATH with --config, or --workdir=DIR '
                      '[--checkpoint=latest|best|PATH].')
    config = load_config_flag(config)
    arrays = load_torch_checkpoint(flags_.torch_checkpoint, flags_.allow_global)
    return arrays, config.model, infer_num_classes(arrays, flags_.num_classes)
  # Late: JAX, flax and TensorFlow load only once the flags are known to be valid.
  from clan_jax.inference import predictor as library

  config = load_config_flag(config) if config is not None else None
  if flags_.workdir:
    predictor = library.predictor_from_workdir(flags_.workdir, flags_.checkpoint, config)
    config = config or read_run_config(flags_.workdir)
  elif config is None or flags_.checkpoint in ('latest', 'best'):
    raise UserError(f'--checkpoint={flags_.checkpoint} without --workdir needs a path and '
                    '--config.')
  else:
    predictor = library.predictor_from_file(flags_.checkpoint, config, flags_.allow_global)
  # The export's path (clan_jax.convert --workdir): checked against the model, every twin key.
  arrays = flax_to_state_dict_arrays(predictor.variables, predictor.model,
                                     image_size=predictor.crop_size)
  return arrays, config.model, len(predictor.class_names)


def main(argv: list[str]) -> int:
  flags_ = flags.FLAGS
  if flags_.image_size % 32 or flags_.resize_size < flags_.image_size:
    raise UserError(f'--image_size={flags_.image_size} must be a multiple of 32 and at most '
                    f'--resize_size={flags_.resize_size} (images are resized, then cropped).')
  arrays, model_config, num_classes = _weights(flags_, flags_.config)
  images = parity_inputs(argv[1:], flags_.image_size, flags_.resize_size, flags_.batch_size,
                         flags_.seed)
  logging.info('comparing on %d inputs of %dx%d, jax %s on %s', len(images), images.shape[1],
               images.shape[2], jax.__version__, jax.devices()[0].platform)
  differences = run_parity(arrays, model_config, num_classes, images)
  print(format_table(differences, flags_.tolerance))
  worst = max(differences, key=lambda d: d.relative)
  if worst.relative > flags_.tolerance:
    print(f'FAILED: {worst.name} differs by {worst.relative:.3g} of its scale '
          f'(tolerance {flags_.tolerance:g}).')
    return 1
  print(f'OK: every output within {flags_.tolerance:g} of its scale '
        f'(worst: {worst.name}, {worst.relative:.3g}).')
  return 0


def run() -> None:
  """The console command `clan-parity`."""
  _define_flags()
  cli.run(main, explain_flag_error)


if __name__ == '__main__':
  run()
