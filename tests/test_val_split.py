"""clan_jax.datasets.val_split: dataset.val_split resolved against the dataset's splits."""

import types

import pytest

from clan_jax.base.errors import ConfigError
from clan_jax.datasets.val_split import resolve_val_split


def dataset(val_split='auto', train_split='train', eval_split='test'):
  return types.SimpleNamespace(val_split=val_split, train_split=train_split,
                               eval_split=eval_split)


@pytest.mark.parametrize('config, splits, expected', [
    (dataset(), ('train', 'validation', 'test'), 'validation'),  # oxford_flowers102.
    (dataset(), ('train', 'val', 'test'), 'val'),
    (dataset(), ('train', 'test'), ''),  # CUB, Cars, Dogs: none, the eval split chooses.
    (dataset(train_split='trainval'), ('trainval', 'val', 'test'), ''),  # val is trained on.
    (dataset(train_split='train+val'), ('train', 'val', 'test'), ''),
    (dataset(eval_split='validation'), ('train', 'validation'), ''),  # food101: its test.
    (dataset(val_split=''), ('train', 'validation', 'test'), ''),
    (dataset(val_split='train[90%:]', train_split='train[:90%]'), ('train', 'test'),
     'train[90%:]'),
    (dataset(val_split='test'), ('train', 'test'), 'test'),
])
def test_resolution(config, splits, expected):
  assert resolve_val_split(config, splits) == expected


def test_a_split_the_dataset_lacks_is_named_with_those_it_has():
  with pytest.raises(ConfigError, match=r"no split 'valid' .*it has test, train"):
    resolve_val_split(dataset(val_split='valid[:50%]'), ('train', 'test'))
