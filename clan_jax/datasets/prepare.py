"""Build a dataset once and print what it holds.

    python -m clan_jax.datasets.prepare --dataset=cub --manual_dir=~/downloads [--data_dir=DIR]
    python -m clan_jax.datasets.prepare --dataset=folder --root=~/my_birds
    python -m clan_jax.datasets.prepare --dataset=tfds --tfds_name=oxford_flowers102
    python -m clan_jax.datasets.prepare --config=configs/demo.py     # the config's dataset

Prints, per split, the examples, the classes and the files it skipped. Training builds the
dataset on first use in the same way; a built dataset is reused. A missing archive is one
message naming the expected files and where to get them (exit status 2). An archive that
differs from the official one is a warning, an error with --verify_checksums. A stock TFDS
dataset (--dataset=tfds) is downloaded by its TFDS builder (docs/DATA.md). TFDS's progress
bars and status lines and TensorFlow's banners are shown only with --verbose.
"""

import sys
import types

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from clan_jax.base import cli, quiet
from clan_jax.base.errors import UserError
from clan_jax.config.config_flag import explain_flag_error, load_config_flag
from clan_jax.datasets import DATASET_NAMES, dataset_title, get_builder, prepare

flags.DEFINE_enum('dataset', None, list(DATASET_NAMES), 'Dataset to build.')
flags.DEFINE_string('manual_dir', None, 'Folder holding the original archives.')
flags.DEFINE_string('data_dir', None, 'TFDS data dir (default: $TFDS_DATA_DIR or '
                    '~/tensorflow_datasets).')
flags.DEFINE_string('root', None, "For --dataset=folder: root/<split>/<class>/<image>.")
flags.DEFINE_string('tfds_name', None, "For --dataset=tfds: a TFDS dataset, e.g. "
                    "'oxford_flowers102' or 'food101:2.1.0'.")
flags.DEFINE_string('image_key', None, "For --dataset=tfds: its image feature (default 'image').")
flags.DEFINE_string('label_key', None, "For --dataset=tfds: its ClassLabel feature (default "
                    "'label').")
flags.DEFINE_bool('verify_checksums', False, 'Fail if an archive differs from the official one.')
flags.DEFINE_bool('verbose', False, "Show TFDS's progress bars and status lines and "
                  "TensorFlow's log lines while building.")
config_flags.DEFINE_config_file('config', None, 'Optional config file whose `dataset` section '
                                'is used (with --config.dataset.KEY=VALUE); the flags above '
                                'override it.')
FLAGS = flags.FLAGS


def dataset_config_from_flags():
  if FLAGS['config'].present:
    dataset = load_config_flag(FLAGS.config).dataset
  else:
    dataset = types.SimpleNamespace(name='', data_dir='', manual_dir='', root='', synthetic={},
                                    aircraft_label='variant', aircraft_crop_banner=True,
                                    tfds_name='', image_key='image', label_key='label')
  for field in ('dataset', 'manual_dir', 'data_dir', 'root', 'tfds_name', 'image_key',
                'label_key'):
    value = getattr(FLAGS, field)
    if value is not None:
      setattr(dataset, 'name' if field == 'dataset' else field, value)
  if not dataset.name:
    raise UserError(f'--dataset is required (one of {", ".join(DATASET_NAMES)}) unless '
                        '--config names one.')
  if dataset.name == 'folder' and not dataset.root:
    raise UserError('--dataset=folder reads root/<split>/<class>/<image>: set --root=DIR '
                    '(or dataset.root in the --config file).')
  if dataset.name == 'tfds' and not dataset.tfds_name:
    raise UserError('--dataset=tfds reads a stock TFDS dataset: set --tfds_name=NAME, e.g. '
                    '--tfds_name=oxford_flowers102 (or dataset.tfds_name in the --config file).')
  return dataset


def _prepare_quietly(dataset_config):
  """prepare() with one line of our own instead of the libraries' output."""
  quiet.quiet_tensorflow()  # Before prepare() imports TensorFlow.
  quiet.quiet_tfds()
  absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS's warnings about half-built folders.
  builder = get_builder(dataset_config)
  if not builder.is_prepared():
    print(f'building {dataset_title(builder)} under {builder.data_dir} (--verbose shows '
          'progress)...', file=sys.stderr, flush=True)
  with quiet.tfds_status_lines_hidden():
    return prepare(dataset_config, verify_checksums=FLAGS.verify_checksums, builder=builder)


def main(argv: list[str]) -> None:
  del argv
  dataset_config = dataset_config_from_flags()
  if FLAGS.verbose:
    summary = prepare(dataset_config, verify_checksums=FLAGS.verify_checksums)
  else:
    summary = _prepare_quietly(dataset_config)
  print(summary.format())


def run() -> None:
  """The console command `clan-prepare`."""
  cli.run(main, explain_flag_error)


if __name__ == '__main__':
  run()
