r"""Top-5 classes of image files, from a training workdir or a PyTorch checkpoint.

    python -m clan_jax.predict --workdir=runs/cub [--checkpoint=latest|best|PATH] bird1.jpg
    python -m clan_jax.predict --checkpoint=clan_r50_cub.pth --config=configs/cub.py \
        [--config.KEY=VALUE ...] IMAGE ...
    python -m clan_jax.predict --workdir=runs/cub --figures=DIR IMAGE ...   # and the figures

--checkpoint is spelled as for `main.py --mode=eval` (clan_jax/inference/model_source.py):
latest or best of --workdir, or a path (a variables checkpoint folder written by
clan_jax.convert, or a PyTorch file of the whole model; --torch_checkpoint=PATH says the
same). With --workdir the model, image sizes and class names come from the workdir
(config.json and classes.json, written by training; --config replaces config.json). Without
it, --config is required and the class names come from the config's dataset if it is
prepared (else they are numbered, with a warning); a variables checkpoint also needs
dataset.num_classes. Each image goes through clan_jax.datasets.preprocess's eval transform,
the one evaluation uses: any mode (RGBA, grayscale, CMYK, palette, 16-bit) becomes RGB, then
the square resize to dataset.resize_size and the centre crop to dataset.crop_size. Probabilities are the softmax of the fused logits (model.fusion).

--figures=DIR also writes each image's attention figure (the one drawing of --mode=visualize,
docs/VISUALIZE.md; a CLAN with CLSA or CLCA) as DIR/<name without extension>_attention.png
(repeated names numbered: x_attention.png, x_2_attention.png; never an image given); a rerun
overwrites them. The title gives the predicted class and, when the image's folder is named
after a class (as in a folder dataset, root/test/<class>/x.jpg), the true one; a wrong
prediction is marked.

Output, in the order of the arguments: per image its path and up to 5 lines
`  0.8123  <class name> (label 3)` (with --figures, then `  figure: PATH`); with --json one
object per line on stdout (logs go to stderr):
    {"image": path, "top5": [{"label": int, "name": str, "prob": float}, ...]}
    {"image": path, "top5": [...], "figure": path}      with --figures
    {"image": path, "error": str}      for a missing or unreadable file
An unreadable file does not stop the others. Exit status: 0 all predicted, 1 some image could
not be read, 2 a user error (no such workdir or checkpoint, bad flag).
"""

import json
import logging
import os
import sys

from absl import flags
from absl import logging as absl_logging

from clan_jax.base import cli, quiet
from clan_jax.base.errors import UserError
from clan_jax.base.text import plural
from clan_jax.config.config_flag import explain_flag_error, load_config_flag

EXIT_UNREADABLE = 1  # Some image could not be read; the others were predicted.


def _define_flags() -> None:
  from ml_collections import config_flags  # Late: see clan_jax/convert.py.


  config_flags.DEFINE_config_file(
      'config', None, 'Config file (configs/*.py); with --workdir it replaces config.json.',
      lock_config=True)
  flags.DEFINE_string('workdir', '', 'A training workdir (config.json, classes.json, '
                      'checkpoints/).')
  flags.DEFINE_string('checkpoint', 'latest', cli.CHECKPOINT_HELP + ' A path without --workdir '
                      'needs --config.')
  flags.DEFINE_string('torch_checkpoint', '', 'A PyTorch checkpoint (.pth, .pt, .safetensors) '
                      'of the whole model of --config, instead of --workdir (the same as '
                      '--checkpoint=PATH).')
  flags.DEFINE_list('allow_global', [], 'Python globals to allow in the .pth file, if you '
                    'trust it.')
  flags.DEFINE_integer('batch_size', 32, 'Images per forward pass.')
  flags.DEFINE_bool('json', False, 'One JSON object per image and line on stdout.')
  flags.DEFINE_string('figures', None, 'Also write each image\'s attention figure into this '
                      'folder, as <image name>_attention.png (docs/VISUALIZE.md).')


def _load_predictor(library, flags_, config):
  """The Predictor the flags name; `library` is clan_jax.inference.predictor."""
  if flags_.workdir and flags_.torch_checkpoint:
    raise UserError('give either --workdir or --torch_checkpoint, not both.')
  if flags_.torch_checkpoint and flags_['checkpoint'].present:
    raise UserError('--torch_checkpoint=PATH is --checkpoint=PATH: give one of them.')
  if flags_.workdir:
    return library.predictor_from_workdir(flags_.workdir, flags_.checkpoint, config)
  path = flags_.torch_checkpoint or (flags_.checkpoint if flags_['checkpoint'].present else '')
  if not path or path in ('latest', 'best'):
    raise UserError('give --workdir=DIR (a training workdir) or --torch_checkpoint=PATH '
                    'with --config.')
  if config is None:
    raise UserError('--torch_checkpoint needs --config (the configs/*.py file of the model).')
  return library.predictor_from_file(path, config, flags_.allow_global)


def main(argv: list[str]) -> int:
  flags_ = flags.FLAGS
  paths = argv[1:]
  if not paths:
    raise UserError('no image given: python -m clan_jax.predict --workdir=DIR IMAGE ...')
  if flags_.batch_size <= 0:
    raise UserError(f'--batch_size={flags_.batch_size} is invalid; it must be positive.')
  config = load_config_flag(flags_.config) if flags_.config is not None else None
  absl_logging.set_verbosity(absl_logging.INFO)
  quiet.quiet_tensorflow()  # Before the predictor imports TensorFlow (the eval transform).
  # Late: JAX, flax and TensorFlow load only once the flags are known to be valid.
  from clan_jax.inference import predictor as library

  predictor = _load_predictor(library, flags_, config)
  logging.info('predicting %s with %s: %s, %d px', plural(len(paths), 'image'), predictor.source,
               plural(len(predictor.class_names), 'class', 'classes'), predictor.crop_size)
  failed = 0
  figures_dir = os.path.expanduser(flags_.figures) if flags_.figures else None
  for record in predictor.predict_files(paths, flags_.batch_size, figures_dir):
    failed += 'error' in record
    print(json.dumps(record) if flags_.json else library.format_record(record), flush=True)
  if figures_dir:
    print(f'wrote {plural(len(paths) - failed, "attention figure")} to {figures_dir}',
          file=sys.stderr)
  if failed:
    print(f'{failed} of {plural(len(paths), "image")} could not be read.', file=sys.stderr)
    return EXIT_UNREADABLE
  return 0


def run() -> None:
  """The console command `clan-predict`."""
  _define_flags()
  cli.run(main, explain_flag_error)


if __name__ == '__main__':
  run()
