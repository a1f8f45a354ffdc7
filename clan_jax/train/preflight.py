"""The preflight's checks that run no model: the splits against the official figures, and the
initial weights (docs/TRAINING.md, Preflight).

Their short form opens the log of every training run (train_and_evaluate); --mode=preflight
(clan_jax/perf/preflight.py) prints it with the ImageNet check (imagenet_check.py) and the
time of a few training steps.
"""

import dataclasses
import logging
import os
import re
from typing import Any, Optional

import numpy as np

from clan_jax.base.errors import UserError
from clan_jax.base.text import plural
from clan_jax.datasets import imagenet_groups


class PreflightError(UserError):
  """A preflight check failed: the run would spend its hours on a broken set-up."""


@dataclasses.dataclass(frozen=True)
class Official:
  title: str
  splits: dict  # split -> examples
  classes: int


# The official figures: /work/shared/CLAN_SPEC.md's Datasets table, which the builders'
# docstrings repeat (clan_jax/datasets/cub.py, cars.py, aircraft.py, dogs.py); TFDS's
# caltech_birds2011, cars196 and stanford_dogs have the same splits.
OFFICIAL = {
    'cub': Official('CUB-200-2011', {'train': 5994, 'test': 5794}, 200),
    'cars': Official('Stanford Cars', {'train': 8144, 'test': 8041}, 196),
    'aircraft': Official('FGVC-Aircraft', {'trainval': 6667, 'test': 3333}, 100),
    'dogs': Official('Stanford Dogs', {'train': 12000, 'test': 8580}, 120),
}
# dataset.aircraft_label -> FGVC-Aircraft's classes at that level.
AIRCRAFT_CLASSES = {'variant': 100, 'family': 70, 'manufacturer': 30}
# 'train[:90%]' -> base 'train', slice '[:90%]' (TFDS's slicing syntax).
_SPLIT = re.compile(r'^(?P<base>[^\[\]]+)(?P<slice>\[.*\])?$')


@dataclasses.dataclass
class Section:
  """Lines of a report, and the warnings among what they show."""
  lines: list
  warnings: list

  def log(self) -> None:
    for line in self.lines:
      logging.info('%s', line)
    for warning in self.warnings:
      logging.warning('%s', warning)

  def text(self) -> str:
    return '\n'.join(self.lines + [f'  WARNING: {w}' for w in self.warnings])


def dataset_key(dataset_config: Any) -> Optional[str]:
  """'cub', 'cars', 'aircraft' or 'dogs' for those datasets (ours or TFDS's), else None."""
  if dataset_config.name == 'tfds':
    return imagenet_groups.TFDS_EQUIVALENTS.get(dataset_config.tfds_name.split(':')[0])
  return dataset_config.name if dataset_config.name in OFFICIAL else None


def official_classes(dataset_config: Any, key: str) -> int:
  if key == 'aircraft' and dataset_config.name == 'aircraft':
    return AIRCRAFT_CLASSES[dataset_config.aircraft_label]
  return OFFICIAL[key].classes


def _figure(value: Optional[int]) -> str:
  return '-' if value is None else f'{value:,}'


def compare_split(role: str, data: Any, dataset_config: Any) -> Section:
  """One split (an input_pipeline.SplitData) against the official figures: a table row."""
  key = dataset_key(dataset_config)
  match = _SPLIT.match(data.name)
  base, sliced = (match['base'], bool(match['slice'])) if match else (data.name, False)
  expected = OFFICIAL[key].splits.get(base) if key else None
  classes = official_classes(dataset_config, key) if key else None
  present = int(np.unique(data.labels).size)
  row = (f'  {role:<5} {data.name:<18} {data.num_examples:>9,} {_figure(expected):>9} '
         f'{present:>8} {_figure(classes):>8}')
  warnings, where = [], f'{role} split {data.name!r}'
  if key and expected is None:
    warnings.append(f'{where} is not an official split of {OFFICIAL[key].title}: not compared.')
  elif sliced:
    warnings.append(f'{where} is a slice: {data.num_examples:,} of the official '
                    f'{expected:,} examples.')
  elif expected is not None and data.num_examples != expected:
    warnings.append(
        f'{where} holds {data.num_examples:,} examples, not the official {expected:,}: '
        'skipped files (`python -m clan_jax.datasets.prepare --config=...` lists them) or '
        'other files than the official ones.')
  if classes is not None and present != classes:
    warnings.append(f'{where} holds {plural(present, "class", "classes")}, not the official '
                    f'{classes}.')
  return Section([row], warnings)


def data_section(run: Any) -> Section:
  """Every split of the run (train, eval, val when set) against the official figures."""
  dataset = run.config.dataset
  key = dataset_key(dataset)
  title = OFFICIAL[key].title if key else 'no official figures'
  lines = [f'data: dataset.name={dataset.name!r} ({title}), {len(run.class_names)} classes',
           f'  {"role":<5} {"split":<18} {"examples":>9} {"official":>9} {"classes":>8} '
           f'{"official":>8}']
  warnings = []
  # val_data: the validation split, on a Run that has one.
  for role, data in (('train', run.train_data), ('eval', run.eval_data),
                     ('val', getattr(run, 'val_data', None))):
    if data is not None:
      row = compare_split(role, data, dataset)
      lines += row.lines
      warnings += row.warnings
  if dataset.val_split not in ('', 'auto') and getattr(run, 'val_data', None) is None:
    lines.append(f'  val   dataset.val_split={dataset.val_split!r}: none loaded')
  if not key:
    lines.append(f'  no official figures for dataset.name={dataset.name!r}: sizes not compared')
  return Section(lines, warnings)


def weights_section(config: Any) -> Section:
  """Which weights training starts from, and whether a real dataset lacks ImageNet weights."""
  init = config.init
  if init.torch_checkpoint:
    what = 'backbone only' if init.torch_backbone_only else 'whole model'
    line = f'weights: init.torch_checkpoint={init.torch_checkpoint} ({what})'
    found = os.path.isfile(os.path.expanduser(init.torch_checkpoint))
    return Section([line], [] if found else ['init.torch_checkpoint: no such file.'])
  if init.checkpoint:
    found = os.path.exists(os.path.expanduser(init.checkpoint))
    return Section([f'weights: init.checkpoint={init.checkpoint}'],
                   [] if found else ['init.checkpoint: no such checkpoint.'])
  if config.dataset.name == 'synthetic':
    return Section(['weights: none: random (the synthetic dataset trains from scratch)'], [])
  if init.from_scratch:
    return Section(['weights: none: training from scratch on purpose (init.from_scratch=True)'],
                   [])
  return Section(['weights: none'], [
      'no ImageNet weights (init.torch_checkpoint and init.checkpoint are empty) and '
      'init.from_scratch=False: a real dataset needs them. Set '
      '--config.init.torch_checkpoint=<the torchvision ImageNet-1k ResNet file> (README), or '
      'init.from_scratch=True to train from random weights on purpose.'])


def short_form(run: Any) -> Section:
  """The splits against the official figures and the initial weights: no model, no compile."""
  data, weights = data_section(run), weights_section(run.config)
  return Section(['preflight (short form; --mode=preflight for the whole check):', *data.lines,
                  *weights.lines], data.warnings + weights.warnings)


def log_short_form(run: Any) -> None:
  """Logs the short form (process 0): the first lines of every training run."""
  if run.is_main_process:
    short_form(run).log()
