"""The builders and prepare: CUB (against TFDS's own builder), folders, synthetic, errors."""

import os
import tarfile
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from clan_jax import datasets
from clan_jax.base.errors import ConfigError
from clan_jax.datasets import input_pipeline
from clan_jax.datasets.sources import ChecksumError, MissingFilesError
from helpers.commands import run_cli
from helpers.configs import dataset_config
from helpers.fake_data import CORRUPT, CUB_CLASSES, CUB_IMAGES, write_folder


def _examples(config, split):
  builder = datasets.get_builder(config)
  ds = builder.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
  return {ex['image/filename'].decode(): ex for ex in ds.as_numpy_iterator()}


def test_cub_splits_labels_names_and_skipped_files(fake_cub):
  config, summary = fake_cub
  train = [i for i, (_, _, is_train, _) in CUB_IMAGES.items() if is_train]
  assert summary.splits == {'train': len(train), 'test': len(CUB_IMAGES) - len(train) - 1}
  assert summary.num_classes == 3
  assert list(summary.skipped) == ['test'] and len(summary.skipped['test']) == 1
  assert summary.skipped['test'][0].startswith(
      f'002.Laysan_Albatross/{CORRUPT}: cannot be decoded as an image')
  assert 'skipped in test: 002.Laysan_Albatross/' + CORRUPT in summary.format()
  builder = datasets.get_builder(config)
  assert builder.info.features['label'].names == list(CUB_CLASSES)
  examples = {**_examples(config, 'train'), **_examples(config, 'test')}
  for image_id, (cls, stem, _, kind) in CUB_IMAGES.items():
    name = f'{CUB_CLASSES[cls]}/{stem}.jpg'
    if kind == 'corrupt':
      assert name not in examples
      continue
    assert examples[name]['label'] == cls
    image = tf.io.decode_image(examples[name]['image'], channels=3).numpy()
    assert image.shape == (50 + 5 * image_id, 90 - 2 * image_id, 3)
  height, width = 50 + 5 * 1, 90 - 2 * 1  # Image 1: box x=4, y=4, w=20.5, h=16.
  np.testing.assert_allclose(examples[f'{CUB_CLASSES[0]}/{CUB_IMAGES[1][1]}.jpg']['bbox'],
                             [4 / height, 4 / width, 20 / height, 24.5 / width], rtol=1e-6)


def test_cub_agrees_with_tfds_caltech_birds2011(fake_cub, tmp_path):
  from tensorflow_datasets.core.download import checksums
  from tensorflow_datasets.image_classification.caltech_birds import CaltechBirds2011

  config, summary = fake_cub
  manual = config.manual_dir
  infos = {}
  for url, name in ((CaltechBirds2011(data_dir=str(tmp_path))._caltech_birds_info.images_url,
                     'CUB_200_2011.tgz'),
                    (CaltechBirds2011(data_dir=str(tmp_path))._caltech_birds_info
                     .segmentations_url, 'segmentations.tgz')):
    path = os.path.join(manual, name)
    infos[url] = checksums.UrlInfo(size=os.path.getsize(path), checksum=_sha256(path),
                                   filename=name)

  class LocalCaltechBirds2011(CaltechBirds2011, skip_registration=True):
    """TFDS's builder, with checksums computed from the local fake archives."""
    url_infos = infos

  reference = LocalCaltechBirds2011(data_dir=str(tmp_path / 'tfds'))
  reference.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  for split in ('train', 'test'):
    ours = {name: int(ex['label']) for name, ex in _examples(config, split).items()}
    ds = reference.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding(),
                                                     'segmentation_mask':
                                                         tfds.decode.SkipDecoding()})
    # TFDS names files by their archive path; ours by the path of images.txt.
    theirs = {'/'.join(ex['image/filename'].decode().split('/')[-2:]): int(ex['label'])
              for ex in ds.as_numpy_iterator()}
    # TFDS stores files without decoding them, so it keeps the corrupt one that we skip.
    theirs.pop(f'002.Laysan_Albatross/{CORRUPT}', None)
    assert ours == theirs
    assert summary.splits[split] == len(theirs)


def _sha256(path):
  from clan_jax.datasets.sources import sha256_of
  return sha256_of(path)


def test_extracted_folder_gives_the_same_dataset(fake_cub, tmp_path):
  config, _ = fake_cub
  with tarfile.open(os.path.join(config.manual_dir, 'CUB_200_2011.tgz')) as archive:
    archive.extractall(tmp_path / 'manual', filter='data')
  extracted = dataset_config(name='cub', manual_dir=str(tmp_path / 'manual'),
                             data_dir=str(tmp_path / 'data'))
  summary = datasets.prepare(extracted)
  assert summary.splits == fake_cub[1].splits
  assert any('extracted folder' in w for w in summary.warnings)
  ours = _examples(config, 'test')
  for name, example in _examples(extracted, 'test').items():
    assert example['image'] == ours[name]['image'] and example['label'] == ours[name]['label']


def test_missing_archive_is_one_clear_message(tmp_path):
  config = dataset_config(name='cub', manual_dir=str(tmp_path / 'empty'),
                          data_dir=str(tmp_path / 'data'))
  with pytest.raises(MissingFilesError) as error:
    datasets.prepare(config)
  message = str(error.value)
  assert 'CUB_200_2011.tgz' in message and 'MISSING' in message
  assert 'data.caltech.edu' in message and 'extracted folder CUB_200_2011/' in message
  assert not os.path.exists(tmp_path / 'data' / 'clan_cub')
  result = run_cli('-m', 'clan_jax.datasets.prepare', '--dataset=cub',
                   f'--manual_dir={tmp_path / "empty"}', f'--data_dir={tmp_path / "data"}',
                   check_returncode=2)
  assert 'CUB_200_2011.tgz' in result.stderr and 'Traceback' not in result.stderr


def test_checksum_mismatch_warns_and_fails_only_when_verified(fake_cub, tmp_path):
  config = dataset_config(name='cub', manual_dir=fake_cub[0].manual_dir,
                          data_dir=str(tmp_path / 'data'))
  with pytest.raises(ChecksumError, match='differs from the official 0c685df5'):
    datasets.prepare(config, verify_checksums=True)
  assert not os.path.exists(tmp_path / 'data' / 'clan_cub')
  result = run_cli('-m', 'clan_jax.datasets.prepare', '--dataset=cub',
                   f'--manual_dir={config.manual_dir}', f'--data_dir={tmp_path / "data"}')
  assert 'warning: CUB_200_2011.tgz: SHA-256' in result.stdout
  assert 'train' in result.stdout and 'Traceback' not in result.stderr
  again = run_cli('-m', 'clan_jax.datasets.prepare', '--dataset=cub',
                  f'--manual_dir={config.manual_dir}', f'--data_dir={tmp_path / "data"}')
  assert 'reused (already built)' in again.stdout


def test_folder_dataset_classes_sorted_bad_files_skipped(tmp_path):
  counts = write_folder(str(tmp_path / 'birds'))
  config = dataset_config(name='folder', root=str(tmp_path / 'birds'),
                          data_dir=str(tmp_path / 'data'))
  summary = datasets.prepare(config)
  assert summary.splits == {split: sum(c.values()) for split, c in sorted(counts.items())}
  assert summary.num_classes == 3
  assert [s.split(':')[0] for s in summary.skipped['train']] == ['wren/broken.jpg']
  builder = datasets.get_builder(config)
  names = builder.info.features['label'].names
  assert names == ['finch', 'wren', 'zebra_finch']
  labels = {n: int(ex['label']) for n, ex in _examples(config, 'test').items()}
  assert labels == {'finch/0.jpg': 0, 'wren/0.jpg': 1, 'zebra_finch/0.jpg': 2}
  sliced = input_pipeline.load_split(config, 'test[1:]')  # TFDS slices work on folders too.
  assert list(sliced.labels) == [1, 2] and sliced.class_names == names
  with open(tmp_path / 'birds' / 'test' / 'wren' / 'new.jpg', 'wb') as f:
    f.write(open(tmp_path / 'birds' / 'test' / 'wren' / '0.jpg', 'rb').read())
  assert datasets.get_builder(config).builder_config.name != builder.builder_config.name


def test_a_leading_tilde_in_paths_is_the_home_folder(tmp_path, monkeypatch):
  """`--root=~/birds` reaches the program with its '~' (the shell expands only a word's start)."""
  write_folder(str(tmp_path / 'birds'))
  monkeypatch.setenv('HOME', str(tmp_path))
  config = dataset_config(name='folder', root='~/birds', data_dir='~/data', manual_dir='~/manual')
  summary = datasets.prepare(config)
  assert summary.path.startswith(str(tmp_path / 'data'))
  assert datasets.get_builder(config).manual_dir == str(tmp_path / 'manual')


def test_synthetic_builds_from_the_config(small_synthetic):
  summary = datasets.prepare(small_synthetic)
  assert summary.splits == {'train': 24, 'test': 12} and summary.num_classes == 4
  example = next(iter(_examples(small_synthetic, 'train').values()))
  assert tf.io.decode_image(example['image']).shape == (64, 64, 3)


def test_prepare_prints_its_table_without_progress_bars_or_banners(tmp_path):
  write_folder(str(tmp_path / 'birds'))
  args = ['-m', 'clan_jax.datasets.prepare', '--dataset=folder', f'--root={tmp_path / "birds"}',
          f'--data_dir={tmp_path / "data"}']
  built = run_cli(*args)
  output = built.stdout + built.stderr
  for noise in ('%|', '\x1b[A', 'oneDNN', 'cpu_feature_guard', 'Downloading and preparing',
                'Subsequent calls will reuse'):
    assert noise not in output, output
  assert built.stdout.startswith('image folder: built at ')
  assert '  train              5        3        1' in built.stdout
  assert built.stderr.startswith('building image folder under ')  # The wait is announced.
  reused = run_cli(*args, '--verbose')  # The libraries may speak; the table stays.
  assert 'image folder: reused (already built)' in reused.stdout


def test_a_missing_eval_split_says_how_to_hold_part_of_train_out():
  builder = types.SimpleNamespace(TITLE='image folder', info=types.SimpleNamespace(
      splits={'train': types.SimpleNamespace(num_examples=5)}))
  with pytest.raises(ConfigError) as error:
    input_pipeline.check_split(builder, 'test')
  message = str(error.value)
  assert message.startswith("split 'test' cannot be read from image folder") and '\n' not in message
  assert ("--config.dataset.train_split='train[:90%]' --config.dataset.eval_split='train[90%:]'"
          in message)
