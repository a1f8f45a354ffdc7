"""Stock TFDS datasets by name: dataset.name='tfds' with dataset.tfds_name.

    builder = stock_builder(dataset_config, data_dir)   # TFDS's own builder, checked
    prepare_stock(builder, manual_dir)                   # downloads and builds, or says how

Any TFDS builder whose `dataset.image_key` feature is an Image and `dataset.label_key`
feature a ClassLabel trains as our own datasets do: e.g. oxford_flowers102, oxford_iiit_pet,
food101, stanford_dogs, caltech_birds2011 ('name:version' and 'name/config' as in
tfds.builder). The builder downloads its files itself (or reads manual_dir, for builders
with manual instructions); the check of names and keys happens before anything is read.
"""

import difflib
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
# Not exported under tfds.download, which exports DownloadError only.
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from clan_jax.base.errors import ConfigError, UserError

# How many close names an unknown tfds_name lists.
_CLOSE_NAMES = 8


def stock_builder(dataset_config, data_dir: str) -> tfds.core.DatasetBuilder:
  """TFDS's builder of dataset.tfds_name under data_dir, its image and label keys checked."""
  name = dataset_config.tfds_name
  if not name:
    raise ConfigError("dataset.tfds_name is empty; dataset.name='tfds' reads a stock TFDS "
                      'dataset: set it, e.g. --config.dataset.tfds_name=oxford_flowers102.')
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(unknown_name_message(name)) from None
  except (AssertionError, ValueError) as e:  # A version or config the builder lacks.
    reason = ' '.join(str(e).split())[:400]
    raise ConfigError(f'dataset.tfds_name={name!r}: {reason}') from None
  check_features(builder, dataset_config.image_key, dataset_config.label_key)
  return builder


def unknown_name_message(name: str) -> str:
  base = name.split(':')[0].split('/')[0].strip().lower()
  known = tfds.list_builders(with_community_datasets=False)
  close = [n for n in known if base and base in n]
  close += [n for n in difflib.get_close_matches(base, known, n=_CLOSE_NAMES, cutoff=0.6)
            if n not in close]
  hint = (f'close names: {", ".join(close[:_CLOSE_NAMES])}' if close
          else 'tfds.list_builders() lists them')
  return (f'dataset.tfds_name={name!r} is not a TFDS dataset of tensorflow-datasets '
          f'{tfds.__version__}; {hint}.')


def describe_features(features) -> str:
  """'image (Image), label (ClassLabel, 102 classes), file_name (Text)'."""
  parts = []
  for key, feature in features.items():
    kind = type(feature).__name__
    if isinstance(feature, tfds.features.ClassLabel):
      kind += f', {feature.num_classes} classes'
    parts.append(f'{key} ({kind})')
  return ', '.join(parts)


def check_features(builder, image_key: str, label_key: str) -> None:
  """ConfigError unless image_key is a uint8 Image and label_key a ClassLabel feature."""
  features = builder.info.features
  name = builder.info.full_name
  listing = describe_features(features)
  for field, key in (('image_key', image_key), ('label_key', label_key)):
    if key not in features.keys():
      raise ConfigError(f'dataset.{field}={key!r} is not a feature of TFDS {name}; its '
                        f'features: {listing}.')
  image = features[image_key]
  if not isinstance(image, tfds.features.Image) or np.dtype(image.np_dtype) != np.uint8:
    raise ConfigError(f'dataset.image_key={image_key!r} of TFDS {name} is not an 8-bit '
                      f'Image; its features: {listing}.')
  if not isinstance(features[label_key], tfds.features.ClassLabel):
    raise ConfigError(f'dataset.label_key={label_key!r} of TFDS {name} is a '
                      f'{type(features[label_key]).__name__}, not a ClassLabel (clan-jax '
                      f'trains classifiers of ClassLabel labels); its features: {listing}.')


def prepare_command(builder) -> str:
  """The prepare command of this builder: name, config and version as tfds.builder takes them."""
  config = f'/{builder.builder_config.name}' if builder.builder_config else ''
  return (f'python -m clan_jax.datasets.prepare --dataset=tfds '
          f'--tfds_name={builder.name}{config}:{builder.version} '
          f'--data_dir={builder.data_dir_root}')


def prepare_stock(builder, manual_dir: str) -> None:
  """Downloads and builds a stock dataset; a UserError saying how when that cannot be done."""
  name = builder.info.full_name
  instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
  if instructions and not (os.path.isdir(manual_dir) and os.listdir(manual_dir)):
    raise UserError(
        f'TFDS {name} needs files downloaded by hand in manual_dir={manual_dir} (set '
        f'dataset.manual_dir or --manual_dir): {" ".join(instructions.split())}')
  # TFDS retries an unreachable host for minutes before it fails: say what is going on.
  logging.info('building TFDS %s with its own builder, which downloads its files (without '
               'internet, run `%s` elsewhere and copy the folder)', name, prepare_command(builder))
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except (OSError, tfds.download.DownloadError, NonMatchingChecksumError) as e:
    reason = (str(e).splitlines() or [''])[0][:300]
    raise UserError(
        f'TFDS {name} is not built in {builder.data_dir_root} and could not be downloaded '
        f'and built ({type(e).__name__}: {reason}); on a machine with internet run `'
        f'{prepare_command(builder)}` and copy that folder here (or point dataset.data_dir '
        'at a copy on shared storage).') from None
