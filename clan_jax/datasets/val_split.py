"""dataset.val_split resolved: the split the best checkpoint is chosen on, or '' for none.

STAND-IN (helper EVALPROTO, issue 17): the TFDS helper writes the reference
`input_pipeline.resolve_val_split(dataset_config, available_splits) -> str`; this file has its
signature and meaning so that training can use it meanwhile; the lead keeps one of the two.
"""

from typing import Any, Iterable

from clan_jax.base.errors import ConfigError

# The names TFDS builders give a validation split (oxford_flowers102: 'validation'; FGVC's
# own lists: 'val'), in order of preference.
VALIDATION_NAMES = ('validation', 'val', 'valid')


def base_names(split: str) -> list[str]:
  """The split names of a TFDS split expression: 'train[:90%]+val' -> ['train', 'val']."""
  return [part.split('[', 1)[0].strip() for part in split.split('+')]


def resolve_val_split(dataset_config: Any, available_splits: Iterable[str]) -> str:
  """'' (none), the configured split or slice, or for 'auto' the dataset's validation split
  when it has one that neither training (train_split, 'trainval') nor eval_split uses."""
  requested = dataset_config.val_split
  available = set(available_splits)
  if requested != 'auto':
    missing = [name for name in base_names(requested) if name and name not in available]
    if missing:
      raise ConfigError(f'dataset.val_split={requested!r}: no split {missing[0]!r} in the '
                        f'dataset (it has {", ".join(sorted(available))}); name one of them, '
                        "a slice such as 'train[90%:]', or '' for none.")
    return requested
  used = set(base_names(dataset_config.train_split)) | set(
      base_names(dataset_config.eval_split))
  if 'trainval' in used:
    return ''
  return next((name for name in VALIDATION_NAMES if name in available and name not in used), '')
