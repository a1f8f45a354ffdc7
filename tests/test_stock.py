"""Stock TFDS datasets by name (dataset.name='tfds'): TFDS's own oxford_flowers102 builder,
its download replaced by generated examples, prepared, loaded, sliced, batched, read by a
training run and predict's class names; the errors of unknown names, missing keys,
non-ClassLabel labels, failed downloads and manual files."""

import contextlib
from unittest import mock

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
# mock_data's generator of random examples of given features (not exported by tfds.testing).
from tensorflow_datasets.testing.mocking import RandomFakeGenerator

from clan_jax import datasets
from clan_jax.base.errors import ConfigError, UserError
from clan_jax.datasets import input_pipeline
from clan_jax.inference import predictor
from clan_jax.train.setup import setup_run
from configs import default
from helpers.commands import run_cli
from helpers.configs import dataset_config

FLOWERS = 'oxford_flowers102'
SIZES = {'train': 12, 'validation': 5, 'test': 7}


@contextlib.contextmanager
def generated_examples(sizes=SIZES):
  """The stock builder's `_split_generators` yields random examples of its own features
  (TFDS's RandomFakeGenerator: 5-50 px images, labels in range) instead of downloading."""
  def split_generators(builder, dl_manager):
    del dl_manager
    return {split: enumerate(RandomFakeGenerator(builder.info.features, count, seed=seed))
            for seed, (split, count) in enumerate(sizes.items())}

  with tfds.testing.disable_gcs_access(), mock.patch.object(
      tfds.builder_cls(FLOWERS), '_split_generators', split_generators):
    yield


@pytest.fixture(scope='module')
def flowers(tmp_path_factory):
  """(config, prepare summary) of oxford_flowers102 built from generated examples."""
  config = dataset_config(name='tfds', tfds_name=FLOWERS, resize_size=40, crop_size=32,
                          data_dir=str(tmp_path_factory.mktemp('tfds')))
  with generated_examples():
    return config, datasets.prepare(config)


def test_stock_dataset_prepares_with_its_class_names(flowers):
  config, summary = flowers
  assert summary.title.startswith(f'TFDS {FLOWERS}/') and not summary.reused
  assert summary.splits == SIZES and summary.num_classes == 102
  builder = datasets.get_builder(config)
  assert builder.is_prepared() and datasets.prepare(config).reused
  names = datasets.label_feature(builder, config).names
  assert names[:2] == ['pink primrose', 'hard-leaved pocket orchid']
  assert predictor.dataset_class_names(config, 102) == names


def test_stock_splits_load_slice_and_batch(flowers):
  config, _ = flowers
  train = input_pipeline.load_split(config, 'train')
  assert train.num_examples == 12 and len(train.class_names) == 102
  assert set(train.dataset_splits) == set(SIZES)
  head = input_pipeline.load_split(config, 'train[:75%]')
  tail = input_pipeline.load_split(config, 'train[75%:]')
  assert (head.num_examples, tail.num_examples) == (9, 3)
  np.testing.assert_array_equal(np.concatenate([head.labels, tail.labels]), train.labels)
  assert list(head.encoded) + list(tail.encoded) == list(train.encoded)
  assert input_pipeline.steps_per_epoch(head.num_examples, 4) == 2
  # One epoch of the slice (3 steps of 3) visits each of its 9 records once.
  batches = list(input_pipeline.train_dataset(head, config, global_batch_size=3).take(3)
                 .as_numpy_iterator())
  assert sorted(np.concatenate([b['index'] for b in batches])) == list(range(9))
  assert batches[0]['image'].shape == (3, 32, 32, 3)
  np.testing.assert_array_equal(batches[0]['label'], head.labels[batches[0]['index']])
  test = input_pipeline.load_split(config, 'test[:5]')
  evaluated = list(input_pipeline.eval_dataset(test, config, global_batch_size=4)
                   .as_numpy_iterator())
  assert [int(b['mask'].sum()) for b in evaluated] == [4, 1]
  assert input_pipeline.resolve_val_split(config, train.dataset_splits) == 'validation'


def test_a_split_it_lacks_lists_its_splits(flowers):
  config, _ = flowers
  with pytest.raises(ConfigError, match=r"split 'val' .* train \(12\), .*validation \(5\)"):
    input_pipeline.load_split(config, 'val')
  with pytest.raises(ConfigError, match=r'test\[:0\].* selects no example'):
    input_pipeline.load_split(config, 'test[:0]')


def test_unknown_name_lists_close_names(tmp_path):
  config = dataset_config(name='tfds', tfds_name='oxford_flower102', data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match=f'not a TFDS dataset.*close names: .*{FLOWERS}'):
    datasets.get_builder(config)
  with pytest.raises(ConfigError, match='only: '):
    datasets.get_builder(dataset_config(config, tfds_name=f'{FLOWERS}:9.9.9'))
  result = run_cli('-m', 'clan_jax.datasets.prepare', '--dataset=tfds',
                   '--tfds_name=food_101', f'--data_dir={tmp_path}', check_returncode=2)
  assert 'close names: food101' in result.stderr and 'Traceback' not in result.stderr


def test_keys_must_be_an_image_and_a_class_label(tmp_path):
  config = dataset_config(name='tfds', tfds_name=FLOWERS, data_dir=str(tmp_path))
  features = r'its features: .*image \(Image\), label \(ClassLabel, 102 classes\)'
  with pytest.raises(ConfigError, match=f"image_key='img' is not a feature.*{features}"):
    datasets.get_builder(dataset_config(config, image_key='img'))
  with pytest.raises(ConfigError, match="label_key='file_name' .* a Text, not a ClassLabel"):
    datasets.get_builder(dataset_config(config, label_key='file_name'))
  with pytest.raises(ConfigError, match="image_key='label' .* not an 8-bit Image"):
    datasets.get_builder(dataset_config(config, image_key='label'))


def test_failed_download_says_which_command_prepares_it(tmp_path):
  config = dataset_config(name='tfds', tfds_name=FLOWERS, data_dir=str(tmp_path))
  offline = requests.exceptions.ConnectionError("Failed to resolve 'www.robots.ox.ac.uk'")
  with tfds.testing.disable_gcs_access(), mock.patch.object(
      tfds.download.DownloadManager, 'download_and_extract', side_effect=offline):
    with pytest.raises(UserError, match='could not be downloaded and built .*ConnectionError.*on '
                       'a machine with internet run `python -m clan_jax.datasets.prepare '
                       f'--dataset=tfds --tfds_name={FLOWERS}:2.1.1 --data_dir={tmp_path}`'):
      input_pipeline.load_split(config, 'train')


def test_manual_builders_need_their_files(tmp_path):
  config = dataset_config(name='tfds', tfds_name='imagenet2012', data_dir=str(tmp_path))
  with pytest.raises(UserError, match=r'imagenet2012/.* needs files downloaded by hand in '
                     f'manual_dir={tmp_path}/downloads/manual'):
    datasets.prepare(config)


def test_a_training_run_reads_it_sliced(flowers, tmp_path):
  config = default.get_config()
  config.dataset = dataset_config(flowers[0], train_split='train[:75%]', eval_split='test[:5]')
  config.init.from_scratch = True
  config.batch_size = 3
  run = setup_run(config, str(tmp_path / 'workdir'), train=True)
  assert run.num_classes == 102 and run.class_names[0] == 'pink primrose'
  assert (run.train_data.num_examples, run.eval_data.num_examples) == (9, 5)
  assert run.steps_per_epoch == 3
