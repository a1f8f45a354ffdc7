"""Stanford Cars, FGVC-Aircraft and Stanford Dogs from fake archives in the official layouts.

Labels, names, split sizes and skipped files; Cars and Dogs against TFDS's own builders on
the same fake files; the aircraft label levels and banner crop; missing files and checksums.
"""

import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from clan_jax import datasets
from clan_jax.datasets.aircraft import ClanAircraft
from clan_jax.datasets.cars import ClanCars, parse_annotations
from clan_jax.datasets.dogs import ClanDogs
from clan_jax.datasets.sources import ChecksumError, MissingFilesError, sha256_of
from clan_jax.base.errors import ConfigError, UserError
from clan_jax.datasets.preprocess import normalize_encoded_image
from helpers.commands import run_cli
from helpers import fake_fgvc_data as fake


def _prepare(builder_class, manual_dir, data_dir, **kwargs):
  builder = builder_class(data_dir=str(data_dir), manual_dir=str(manual_dir), **kwargs)
  return builder, datasets.prepare(None, builder=builder)


def _examples(builder, split):
  ds = builder.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
  return {ex['image/filename'].decode(): ex for ex in ds.as_numpy_iterator()}


def _decode(encoded):
  return tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()


def _skipped_names(summary, split):
  return [entry.split(': ')[0] for entry in summary.skipped.get(split, [])]


@pytest.fixture(scope='module')
def fake_cars(tmp_path_factory):
  base = tmp_path_factory.mktemp('cars')
  fake.write_cars(str(base / 'manual'))
  return (base, *_prepare(ClanCars, base / 'manual', base / 'data'))


@pytest.fixture(scope='module')
def fake_aircraft(tmp_path_factory):
  base = tmp_path_factory.mktemp('aircraft')
  fake.write_aircraft(str(base / 'manual'))
  return base


@pytest.fixture(scope='module')
def fake_dogs(tmp_path_factory):
  base = tmp_path_factory.mktemp('dogs')
  fake.write_dogs(str(base / 'manual'))
  return (base, *_prepare(ClanDogs, base / 'manual', base / 'data'))


# ----------------------------------------------------------------------- Stanford Cars

def test_cars_splits_labels_names_boxes_and_skipped_files(fake_cars):
  _, builder, summary = fake_cars
  assert summary.splits == {'train': 5, 'test': 4} and summary.num_classes == 3
  assert builder.info.features['label'].names == list(fake.CARS_CLASSES)
  assert _skipped_names(summary, 'train') == [fake.CARS_CORRUPT] and 'test' not in summary.skipped
  assert f'skipped in train: {fake.CARS_CORRUPT}: cannot be decoded' in summary.format()
  for split, images in fake.CARS_IMAGES.items():
    examples = _examples(builder, split)
    for fname, cls, kind, (height, width), (x1, y1, x2, y2) in images:
      name = f'cars_{split}/{fname}'
      if kind == 'truncated':
        assert name not in examples
        continue
      assert examples[name]['label'] == cls
      assert _decode(examples[name]['image']).shape == (height, width, 3)
      np.testing.assert_allclose(examples[name]['bbox'],
                                 [y1 / height, x1 / width, y2 / height, x2 / width], rtol=1e-6)


def test_cars_agrees_with_tfds_cars196(fake_cars):
  base, builder, _ = fake_cars
  from tensorflow_datasets.image_classification.cars196 import Cars196

  reference = _local_tfds_builder(Cars196, base / 'manual', base / 'tfds')
  for split in ('train', 'test'):
    theirs = {f'cars_{split}/{ex["id"].decode()}.jpg': ex for ex in reference.as_dataset(
        split=split, decoders={'image': tfds.decode.SkipDecoding()}).as_numpy_iterator()}
    theirs.pop(fake.CARS_CORRUPT, None)  # TFDS stores files undecoded: it keeps this one.
    ours = _examples(builder, split)
    assert sorted(ours) == sorted(theirs)
    for name, example in ours.items():
      assert example['label'] == theirs[name]['label']
      np.testing.assert_allclose(example['bbox'], theirs[name]['bbox'], rtol=1e-6)


def test_cars_extracted_folders_give_the_same_dataset(fake_cars, tmp_path):
  base, builder, summary = fake_cars
  manual = tmp_path / 'manual'
  for archive in ('cars_train.tgz', 'cars_test.tgz', 'car_devkit.tgz'):
    with tarfile.open(base / 'manual' / archive) as f:
      f.extractall(manual, filter='data')
  os.link(base / 'manual' / 'cars_test_annos_withlabels.mat',
          manual / 'cars_test_annos_withlabels.mat')
  extracted, again = _prepare(ClanCars, manual, tmp_path / 'data')
  assert again.splits == summary.splits and again.skipped == summary.skipped
  assert sum('extracted folder' in w for w in again.warnings) == 3
  ours = _examples(builder, 'test')
  for name, example in _examples(extracted, 'test').items():
    assert example['image'] == ours[name]['image'] and example['label'] == ours[name]['label']


def test_cars_unlabelled_test_annotations_are_named(fake_cars):
  base, _, _ = fake_cars
  with tarfile.open(base / 'manual' / 'car_devkit.tgz') as f:
    data = f.extractfile('devkit/cars_test_annos.mat').read()
  with pytest.raises(UserError, match='cars_test_annos_withlabels.mat'):
    parse_annotations(data, 'cars_test_annos_withlabels.mat')
  with pytest.raises(UserError, match='cannot be read as a MATLAB'):
    parse_annotations(b'not a mat file' * 20, 'cars_test_annos_withlabels.mat')


# ----------------------------------------------------------------------- FGVC-Aircraft

@pytest.mark.parametrize('level, crop, names', [
    ('variant', True, tuple(fake.AIRCRAFT_VARIANTS)),
    ('family', False, fake.AIRCRAFT_FAMILIES),
    ('manufacturer', True, fake.AIRCRAFT_MANUFACTURERS),
])
def test_aircraft_label_levels(fake_aircraft, level, crop, names):
  builder, summary = _prepare(ClanAircraft, fake_aircraft / 'manual', fake_aircraft / 'data',
                              label=level, crop_banner=crop)
  assert builder.builder_config.name == f'{level}_{"banner_cropped" if crop else "with_banner"}'
  assert f'/clan_aircraft/{builder.builder_config.name}/' in summary.path
  assert summary.num_classes == len(names)
  assert builder.info.features['label'].names == list(names)
  skipped = [fake.AIRCRAFT_CORRUPT] + ([fake.AIRCRAFT_TOO_SMALL] if crop else [])
  assert _skipped_names(summary, 'trainval') == skipped and 'test' not in summary.skipped
  splits = {s: [i for i, v in fake.AIRCRAFT_IMAGES.items() if v[1] == s]
            for s in ('trainval', 'test')}
  assert summary.splits == {s: len(ids) - (len(skipped) if s == 'trainval' else 0)
                            for s, ids in splits.items()}
  for split, ids in splits.items():
    examples = _examples(builder, split)
    assert set(examples) == {f'{i}.jpg' for i in ids} - set(skipped)
    for name, example in examples.items():
      assert names[example['label']] == fake.aircraft_label_name(name[:-4], level)


@pytest.mark.parametrize('crop', [True, False])
def test_aircraft_banner_crop_keeps_the_original_pixels(fake_aircraft, crop):
  builder, _ = _prepare(ClanAircraft, fake_aircraft / 'manual', fake_aircraft / 'data',
                        crop_banner=crop)
  examples = {**_examples(builder, 'trainval'), **_examples(builder, 'test')}
  assert examples
  for name, example in examples.items():
    image_id = name[:-4]
    original = normalize_encoded_image(fake.aircraft_image(image_id))
    _, _, kind, (height, width) = fake.AIRCRAFT_IMAGES[image_id]
    stored = _decode(example['image'])
    if crop:
      assert stored.shape == (height - 20, width, 3)
      np.testing.assert_array_equal(stored, _decode(original)[:-20])
    else:
      assert example['image'] == original and stored.shape == (height, width, 3)
    x1, y1, x2, y2 = fake.aircraft_box(image_id)
    stored_height = stored.shape[0]
    np.testing.assert_allclose(
        example['bbox'], [y1 / stored_height, x1 / width, min(y2 / stored_height, 1.0),
                          x2 / width], rtol=1e-6)


def test_aircraft_invalid_label_level_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="'variant', 'family', 'manufacturer'"):
    ClanAircraft(data_dir=str(tmp_path), manual_dir=str(tmp_path), label='model')


# ----------------------------------------------------------------------- Stanford Dogs

def test_dogs_splits_labels_names_and_skipped_files(fake_dogs):
  _, builder, summary = fake_dogs
  assert summary.splits == {'train': 4, 'test': 3} and summary.num_classes == 3
  assert builder.info.features['label'].names == list(fake.DOGS_CLASSES)
  assert _skipped_names(summary, 'train') == [fake.DOGS_CORRUPT]
  assert summary.skipped['test'] == [f'{fake.DOGS_NOT_IN_ARCHIVE}: listed in test_list.mat '
                                     'but not in images.tar']
  examples = {**_examples(builder, 'train'), **_examples(builder, 'test')}
  assert set(examples) == set(fake.DOGS_IMAGES) - {fake.DOGS_CORRUPT, fake.DOGS_NOT_IN_ARCHIVE}
  for path, example in examples.items():
    cls, _, _, (height, width) = fake.DOGS_IMAGES[path]
    assert example['label'] == cls
    assert _decode(example['image']).shape == (height, width, 3)


def test_dogs_agrees_with_tfds_stanford_dogs(fake_dogs):
  base, builder, _ = fake_dogs
  reference = _local_tfds_builder(tfds.builder_cls('stanford_dogs'), base / 'manual',
                                  base / 'tfds', fixed_num_classes=True)
  for split in ('train', 'test'):
    theirs = {'/'.join(ex['image/filename'].decode().split('/')[-2:]): int(ex['label'])
              for ex in reference.as_dataset(split=split, decoders={
                  'image': tfds.decode.SkipDecoding()}).as_numpy_iterator()}
    theirs.pop(fake.DOGS_CORRUPT, None)  # TFDS stores files undecoded: it keeps this one.
    assert {p: int(ex['label']) for p, ex in _examples(builder, split).items()} == theirs


# ----------------------------------------------------------------------- Errors, checksums

EXPECTED = {
    ClanCars: ('cars_train.tgz', 'cars_test.tgz', 'car_devkit.tgz',
               'cars_test_annos_withlabels.mat', "Kaggle's 'stanford-car-dataset'"),
    ClanAircraft: ('fgvc-aircraft-2013b.tar.gz', 'robots.ox.ac.uk/~vgg/data/fgvc-aircraft'),
    ClanDogs: ('images.tar', 'lists.tar', 'vision.stanford.edu/aditya86/ImageNetDogs'),
}


@pytest.mark.parametrize('builder_class', list(EXPECTED))
def test_missing_files_message_names_every_file_and_source(builder_class, tmp_path):
  builder = builder_class(data_dir=str(tmp_path / 'data'), manual_dir=str(tmp_path / 'empty'))
  with pytest.raises(MissingFilesError) as error:
    datasets.prepare(None, builder=builder)
  message = str(error.value)
  for expected in EXPECTED[builder_class]:
    assert expected in message
  assert message.count("MISSING") == len(builder.OFFICIAL_FILES)
  assert "--config.dataset.manual_dir=DIR" in message and "NAME" not in message
  assert not os.path.exists(tmp_path / 'data' / builder.name)


def test_partly_missing_cars_files_say_which(fake_cars, tmp_path):
  base, _, _ = fake_cars
  (tmp_path / 'manual').mkdir()
  os.link(base / 'manual' / 'cars_train.tgz', tmp_path / 'manual' / 'cars_train.tgz')
  with pytest.raises(MissingFilesError) as error:
    _prepare(ClanCars, tmp_path / 'manual', tmp_path / 'data')
  message = str(error.value)
  assert 'cars_train.tgz (or the extracted folder cars_train/): found' in message
  assert message.count('MISSING') == 3 and 'cars_test_annos_withlabels.mat: MISSING' in message


def test_prepare_cli_exits_2_without_traceback(tmp_path):
  result = run_cli('-m', 'clan_jax.datasets.prepare', '--dataset=cars',
                   f'--manual_dir={tmp_path / "empty"}', f'--data_dir={tmp_path / "data"}',
                   check_returncode=2)
  assert 'Traceback' not in result.stderr
  for expected in EXPECTED[ClanCars]:
    assert expected in result.stderr


def test_prepare_cli_names_its_own_root_flag_for_a_folder(tmp_path):
  result = run_cli('-m', 'clan_jax.datasets.prepare', '--dataset=folder',
                   f'--data_dir={tmp_path / "data"}', check_returncode=2)
  assert 'set --root=DIR' in result.stderr and 'Traceback' not in result.stderr


def test_checksum_mismatch_warns_and_fails_only_when_verified(fake_cars, fake_dogs, tmp_path):
  summaries = {'cars': fake_cars[2], 'dogs': fake_dogs[2]}
  official = {'cars': ('cars_train.tgz', '512b227b'), 'dogs': ('lists.tar', '34b47cac')}
  for name, summary in summaries.items():
    filename, digest = official[name]
    assert any(w.startswith(f'{filename}: SHA-256') and f'differs from the official {digest}'
               in w for w in summary.warnings)
    assert f'warning: {filename}: SHA-256' in summary.format()
  assert len(fake_cars[2].warnings) == 4 and len(fake_dogs[2].warnings) == 2
  builder = ClanCars(data_dir=str(tmp_path / 'data'), manual_dir=str(fake_cars[0] / 'manual'))
  with pytest.raises(ChecksumError, match='cars_test_annos_withlabels.mat: SHA-256'):
    datasets.prepare(None, verify_checksums=True, builder=builder)
  assert not os.path.exists(tmp_path / 'data' / 'clan_cars')


def test_aircraft_has_no_official_checksum(fake_aircraft, tmp_path):
  _, summary = _prepare(ClanAircraft, fake_aircraft / 'manual', tmp_path / 'data',
                        label='manufacturer', crop_banner=False)
  assert summary.warnings == []


# ----------------------------------------------------------------------- helpers

def _local_tfds_builder(builder_class, manual_dir, data_dir, fixed_num_classes=False):
  """TFDS's own builder, built from the fake files: their checksums replace the official.

  `fixed_num_classes`: the builder fixes the real number of classes, which the fake lacks.
  """
  from tensorflow_datasets.core.download import checksums

  infos = {}
  for url, info in builder_class.url_infos.items():
    path = os.path.join(manual_dir, info.filename)
    infos[url] = checksums.UrlInfo(size=os.path.getsize(path), checksum=sha256_of(path),
                                   filename=info.filename)

  class Local(builder_class, skip_registration=True):
    url_infos = infos

    def _info(self):
      info = super()._info()
      if fixed_num_classes:
        info.features['label']._num_classes = None  # Then set from the names, as ours.
      return info

  reference = Local(data_dir=str(data_dir))
  reference.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  return reference
