"""Datasets: TFDS builders of our own for each dataset, and `prepare` (build once, summarise).

    builder = get_builder(config.dataset)       # not built yet: nothing is read
    summary = prepare(config.dataset)            # builds it under data_dir if needed
    print(summary.format())

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


def get_builder(dataset_config: Any):
  """The TFDS builder of `dataset_config` (name, data_dir, manual_dir, root, synthetic)."""
  builder_class = _builder_class(dataset_config.name)
  # A shell leaves the '~' of `--flag=~/dir` alone: expand it here.
  data_dir = os.path.expanduser(dataset_config.data_dir or default_data_dir())
  manual_dir = os.path.expanduser(dataset_config.manual_dir or
                                  os.path.join(data_dir, 'downloads', 'manual'))
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
  if not reused:
    if builder.OFFICIAL_FILES:
      for warning in builder.dataset_files().checksum_warnings(verify_checksums):
        builder.record_warning(warning)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=builder.manual_dir))
  return PrepareSummary(
      title=builder.TITLE, path=os.fspath(builder.data_path), reused=reused,
      splits={name: info.num_examples for name, info in builder.info.splits.items()},
      num_classes=builder.info.features['label'].num_classes,
      skipped=skipped_files(builder), warnings=build_warnings(builder))
