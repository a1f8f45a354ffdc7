"""Datasets: TFDS builders of our own for each dataset, stock TFDS datasets by name
(dataset.name='tfds', stock.py), and `prepare` (build once, summarise).

    builder = get_builder(config.dataset)       # not built yet: nothing is read
    summary = prepare(config.dataset)            # builds it under data_dir if needed
    print(summary.format())
    label_feature(builder, config.dataset).names # the class names, whatever the builder

Importing this package is light (no TensorFlow): the builders import TFDS when used.
"""

import dataclasses
import importlib
import os
from typing import Any, Optional

from clan_jax.base.errors import ConfigError
from clan_jax.datasets.synthetic_images import SyntheticSpec  # numpy only: still light.

DATASET_NAMES = ('cub', 'cars', 'aircraft', 'dogs', 'folder', 'synthetic', 'tfds')


# name -> (module, class) of its builder, imported on use (TFDS is heavy).
_BUILDERS = {
    'cub': ('clan_jax.datasets.cub', 'ClanCub'),
    'cars': ('clan_jax.datasets.cars', 'ClanCars'),
    'aircraft': ('clan_jax.datasets.aircraft', 'ClanAircraft'),
    'dogs': ('clan_jax.datasets.dogs', 'ClanDogs'),
    'folder': ('clan_jax.datasets.folder', 'ClanFolder'),
    'synthetic': ('clan_jax.datasets.synthetic', 'ClanSynthetic'),
}


def _builder_class(name: str):
  if name not in _BUILDERS:
    raise ConfigError(f'dataset.name={name!r} is invalid; allowed values: '
                      f'{", ".join(repr(n) for n in DATASET_NAMES)}.')
  module, cls = _BUILDERS[name]
  return getattr(importlib.import_module(module), cls)


def spec_from_config(synthetic_config):
  """A SyntheticSpec from the `dataset.synthetic` section (a ConfigDict or a dict)."""
  values = dict(synthetic_config.items()) if hasattr(synthetic_config, 'items') else {}
  fields = {f.name for f in dataclasses.fields(SyntheticSpec)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ConfigError(f'dataset.synthetic has unknown fields {unknown}; allowed: '
                      f'{sorted(fields)}.')
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  spec = SyntheticSpec(**values)
  try:
    spec.validate()
  except ValueError as e:
    raise ConfigError(f'dataset.synthetic: {e}') from None
  return spec


def default_data_dir() -> str:
  return os.environ.get('TFDS_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets')


def data_dirs(dataset_config: Any) -> tuple[str, str]:
  """(data_dir, manual_dir) of the config, defaults filled in."""
  # A shell leaves the '~' of `--flag=~/dir` alone: expand it here.
  data_dir = os.path.expanduser(dataset_config.data_dir or default_data_dir())
  manual_dir = os.path.expanduser(dataset_config.manual_dir or
                                  os.path.join(data_dir, 'downloads', 'manual'))
  return data_dir, manual_dir


def _is_stock(dataset_config: Optional[Any]) -> bool:
  return dataset_config is not None and dataset_config.name == 'tfds'


def feature_keys(dataset_config: Optional[Any]) -> tuple[str, str]:
  """(image key, label key): the config's for a stock TFDS dataset, ours otherwise."""
  if _is_stock(dataset_config):
    return dataset_config.image_key, dataset_config.label_key
  return 'image', 'label'


def label_feature(builder: Any, dataset_config: Any):
  """The ClassLabel feature of the labels (its names, num_classes)."""
  return builder.info.features[feature_keys(dataset_config)[1]]


def dataset_title(builder: Any) -> str:
  """'CUB-200-2011' for ours, 'TFDS oxford_flowers102/2.1.1' for a stock dataset."""
  return getattr(builder, 'TITLE', '') or f'TFDS {builder.info.full_name}'


def get_builder(dataset_config: Any):
  """The TFDS builder of `dataset_config` (name, data_dir, manual_dir, root, synthetic;
  tfds_name, image_key and label_key for a stock TFDS dataset)."""
  data_dir, manual_dir = data_dirs(dataset_config)
  if _is_stock(dataset_config):
    from clan_jax.datasets import stock  # Late: imports TFDS, and this package must stay light.

    return stock.stock_builder(dataset_config, data_dir)
  builder_class = _builder_class(dataset_config.name)
  kwargs = {'data_dir': data_dir, 'manual_dir': manual_dir}
  if dataset_config.name == 'folder':
    kwargs['root'] = os.path.expanduser(dataset_config.root)
    if not dataset_config.root:
      raise ConfigError("dataset.root is empty; dataset.name='folder' reads "
                        'root/<split>/<class>/<image>: set --config.dataset.root=DIR.')
  if dataset_config.name == 'aircraft':
    kwargs['label'] = dataset_config.aircraft_label
    kwargs['crop_banner'] = dataset_config.aircraft_crop_banner
  if dataset_config.name == 'synthetic':
    kwargs['spec'] = spec_from_config(dataset_config.synthetic)
  return builder_class(**kwargs)


@dataclasses.dataclass
class PrepareSummary:
  title: str
  path: str
  reused: bool
  splits: dict[str, int]  # split -> examples
  num_classes: int
  skipped: dict[str, list[str]]
  warnings: list[str]

  def format(self) -> str:
    verb = 'reused (already built)' if self.reused else 'built'
    lines = [f'{self.title}: {verb} at {self.path}',
             f'  {"split":<10} {"examples":>9} {"classes":>8} {"skipped":>8}']
    for split, count in self.splits.items():
      lines.append(f'  {split:<10} {count:>9,} {self.num_classes:>8} '
                   f'{len(self.skipped.get(split, [])):>8}')
    for split, files in self.skipped.items():
      lines += [f'  skipped in {split}: {entry}' for entry in files]
    lines += [f'  warning: {w}' for w in self.warnings]
    return '\n'.join(lines)


def prepare(dataset_config: Any, verify_checksums: bool = False,
            builder: Optional[Any] = None) -> PrepareSummary:
  """Builds the dataset under data_dir unless it is built already; returns its summary.

  Raises MissingFilesError (naming the expected files and where to get them) before
  anything is written, and ChecksumError only when `verify_checksums`.
  """
  import tensorflow_datasets as tfds  # Late: slow to load; config validation imports this.

  from clan_jax.datasets.base import build_warnings, skipped_files  # Late: imports TFDS.

  builder = builder or get_builder(dataset_config)
  reused = builder.is_prepared()
  if not reused and _is_stock(dataset_config):
    from clan_jax.datasets.stock import prepare_stock  # Late: as above.

    prepare_stock(builder, data_dirs(dataset_config)[1])
  elif not reused:
    if builder.OFFICIAL_FILES:
      for warning in builder.dataset_files().checksum_warnings(verify_checksums):
        builder.record_warning(warning)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=builder.manual_dir))
  return PrepareSummary(
      title=dataset_title(builder), path=os.fspath(builder.data_path), reused=reused,
      splits={name: info.num_examples for name, info in builder.info.splits.items()},
      num_classes=label_feature(builder, dataset_config).num_classes,
      skipped=skipped_files(builder), warnings=build_warnings(builder))
