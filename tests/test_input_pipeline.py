"""The tf.data pipeline: determinism, resumption, exact eval, processes, cache, reference."""

import numpy as np
import pytest

from clan_jax.datasets import input_pipeline
from clan_jax.datasets import preprocess
from clan_jax.base.errors import ConfigError
from helpers.configs import dataset_config
from helpers.fake_data import CUB_CLASSES, CUB_IMAGES, cub_image_bytes


@pytest.fixture(scope='module')
def train_split(small_synthetic):
  return input_pipeline.load_split(small_synthetic, 'train')


def _batches(data, config, steps, **kwargs):
  kwargs.setdefault('global_batch_size', 8)
  ds = input_pipeline.train_dataset(data, config, **kwargs).take(steps)
  return list(ds.as_numpy_iterator())


def _equal(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_batches_are_uint8_and_follow_the_seed(small_synthetic, train_split):
  first = _batches(train_split, small_synthetic, 4)
  assert first[0]['image'].dtype == np.uint8 and first[0]['image'].shape == (8, 64, 64, 3)
  assert first[0]['label'].dtype == np.int32
  np.testing.assert_array_equal(first[0]['label'], train_split.labels[first[0]['index']])
  assert _equal(first, _batches(train_split, small_synthetic, 4))
  other = dataset_config(small_synthetic, shuffle_seed=1)
  other_batches = _batches(train_split, other, 4)
  assert not np.array_equal(first[0]['index'], other_batches[0]['index'])
  # One epoch (24 examples = 3 steps) visits every example once, in a new order each epoch.
  epoch = np.concatenate([b['index'] for b in first[:3]])
  assert sorted(epoch) == list(range(24))
  second = np.concatenate([b['index'] for b in _batches(train_split, small_synthetic, 6)[3:]])
  assert sorted(second) == list(range(24)) and not np.array_equal(epoch, second)


def test_augmentation_is_keyed_on_position_not_record(small_synthetic, train_split):
  batches = _batches(train_split, small_synthetic, 9)
  views = {}
  for batch in batches:  # Three epochs: each record is seen three times.
    for index, image in zip(batch['index'], batch['image']):
      views.setdefault(int(index), []).append(image)
  assert all(len(v) == 3 for v in views.values())
  differing = sum(not np.array_equal(v[0], v[1]) for v in views.values())
  assert differing >= 20  # Random crop and flip change (almost) every view.


def test_resume_at_step_k_gives_batches_k_and_on(small_synthetic, train_split):
  full = _batches(train_split, small_synthetic, 7)
  assert _equal(full[4:], _batches(train_split, small_synthetic, 3, start_step=4))


def test_processes_together_produce_the_global_batch(small_synthetic, train_split):
  whole = _batches(train_split, small_synthetic, 3)
  parts = [_batches(train_split, small_synthetic, 3, process_index=p, process_count=2)
           for p in range(2)]
  for step in range(3):
    for key in whole[step]:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]), whole[step][key])
  with pytest.raises(ConfigError, match='not divisible by the 3 processes'):
    _batches(train_split, small_synthetic, 1, process_count=3)


def test_cache_changes_nothing_but_speed(small_synthetic, train_split):
  cached = input_pipeline.load_split(dataset_config(small_synthetic, cache=True), 'train')
  assert cached.images.shape == (24, 72, 72, 3)
  assert _equal(_batches(train_split, small_synthetic, 4), _batches(cached, small_synthetic, 4))


@pytest.mark.parametrize('augment', [
    {'augment.random_resized_crop': True},
    {'augment.color_jitter': 0.5},
    {'augment.random_crop': False, 'augment.flip': False},
])
def test_optional_augmentations_are_deterministic(small_synthetic, train_split, augment):
  config = dataset_config(small_synthetic, **augment)
  first = _batches(train_split, config, 2)
  assert first[0]['image'].shape == (8, 64, 64, 3)
  assert _equal(first, _batches(train_split, config, 2))
  assert not _equal(first, _batches(train_split, small_synthetic, 2))


@pytest.mark.parametrize('processes', [1, 2])
def test_eval_counts_every_example_once_with_padding(small_synthetic, processes):
  data = input_pipeline.load_split(small_synthetic, 'test')  # 12 examples, batch 8.
  per_process = [list(input_pipeline.eval_dataset(
      data, small_synthetic, global_batch_size=8, process_index=p,
      process_count=processes).as_numpy_iterator()) for p in range(processes)]
  assert all(len(batches) == 2 for batches in per_process)
  indices = np.concatenate([b['index'][b['mask']] for batches in per_process for b in batches])
  assert sorted(indices) == list(range(12))
  assert sum(int((~b['mask']).sum()) for batches in per_process for b in batches) == 4


def test_eval_output_equals_the_reference_preprocessing(fake_cub):
  config, _ = fake_cub  # JPEG, grayscale, CMYK, RGBA PNG, palette PNG, PNG-in-.jpg files.
  data = input_pipeline.load_split(config, 'test')
  batches = input_pipeline.eval_dataset(data, config, global_batch_size=4).as_numpy_iterator()
  names = {}
  for image_id, (cls, stem, _, kind) in CUB_IMAGES.items():
    if kind != 'corrupt':
      names[(cls, stem)] = image_id
  seen = 0
  builder_names = _filenames(config, 'test')
  for batch in batches:
    for index, image, valid in zip(batch['index'], batch['image'], batch['mask']):
      if not valid:
        continue
      cls_name, stem = builder_names[index].split('/')
      image_id = names[(CUB_CLASSES.index(cls_name), stem[:-4])]
      reference = preprocess.eval_transform(
          preprocess.normalize_encoded_image(cub_image_bytes(image_id)), 72, 64)
      np.testing.assert_array_equal(image, reference)
      seen += 1
  assert seen == data.num_examples == 5


def _filenames(config, split):
  import tensorflow_datasets as tfds

  from clan_jax import datasets

  ds = datasets.get_builder(config).as_dataset(
      split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(interleave_cycle_length=1))
  return [ex['image/filename'].decode() for ex in ds.as_numpy_iterator()]


def test_unknown_split_is_a_clear_error(small_synthetic):
  with pytest.raises(ConfigError, match=r"split 'validation' cannot be read from .*its splits: "
                     r'train \(24\), test \(12\)'):
    input_pipeline.load_split(small_synthetic, 'validation')
  with pytest.raises(ConfigError, match=r"'train\[:30\]' cannot .* incompatible with 24"):
    input_pipeline.load_split(small_synthetic, 'train[:30]')


def test_slices_of_our_builders_load_as_splits_of_their_own(small_synthetic, train_split):
  head = input_pipeline.load_split(small_synthetic, 'train[:75%]')
  tail = input_pipeline.load_split(small_synthetic, 'train[75%:]')
  assert (head.num_examples, tail.num_examples) == (18, 6) and head.name == 'train[:75%]'
  np.testing.assert_array_equal(np.concatenate([head.labels, tail.labels]), train_split.labels)
  assert head.dataset_splits == ('train', 'test') and head.class_names == train_split.class_names
  assert input_pipeline.steps_per_epoch(head.num_examples, 8) == 2
  # The stream of the slice: one epoch (18 positions) visits each record once; resumption exact.
  batches = _batches(head, small_synthetic, 9, global_batch_size=6)
  for epoch in range(3):
    indices = np.concatenate([b['index'] for b in batches[3 * epoch:3 * epoch + 3]])
    assert sorted(indices) == list(range(18))
  assert _equal(batches[4:], _batches(head, small_synthetic, 5, global_batch_size=6,
                                      start_step=4))
  cached = input_pipeline.load_split(dataset_config(small_synthetic, cache=True), 'test[:5]')
  assert cached.num_examples == 5 and cached.images.shape[0] == 5


@pytest.mark.parametrize('train, evaluate, requested, expected', [
    ('train', 'test', 'auto', 'val'),  # FGVC-Aircraft's halves of trainval.
    ('trainval', 'test', 'auto', ''),  # Training reads val.
    ('train[:90%]', 'test', 'auto', 'val'),
    ('train+val', 'test', 'auto', ''),
    ('train', 'val', 'auto', ''),  # val is the eval split: the best is chosen on it anyway.
    ('train', 'test', '', ''),
    ('train[:90%]', 'test', 'train[90%:]', 'train[90%:]'),
    ('train', 'test', 'test', 'test'),
])
def test_val_split_resolves_auto_none_or_a_split(train, evaluate, requested, expected):
  config = dataset_config(train_split=train, eval_split=evaluate, val_split=requested)
  assert input_pipeline.resolve_val_split(config, ('train', 'val', 'trainval', 'test')) == expected


def test_val_split_auto_finds_a_validation_split_and_rejects_unknown_ones():
  config = dataset_config(train_split='train', eval_split='test', val_split='auto')
  assert input_pipeline.resolve_val_split(config, ('train', 'validation', 'test')) == 'validation'
  assert input_pipeline.resolve_val_split(config, ('train', 'test')) == ''
  wrong = dataset_config(config, val_split='validation[:50%]')
  with pytest.raises(ConfigError, match=r"val_split='validation\[:50%\]' names no split .*"
                     r'\(validation\); its splits: train, test'):
    input_pipeline.resolve_val_split(wrong, ('train', 'test'))


def test_a_dataset_that_must_not_be_built_here_is_a_clear_error(small_synthetic, tmp_path):
  # Jobs of several processes load with build=False: they must not build it concurrently.
  unbuilt = dataset_config(small_synthetic, data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match='is not built in .* clan_jax.datasets.prepare'):
    input_pipeline.load_split(unbuilt, 'train', build=False)
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('cache', [False, True])
def test_eval_examples_are_the_first_of_the_eval_stream(small_synthetic, cache):
  config = dataset_config(small_synthetic, cache=cache)
  data = input_pipeline.load_split(config, 'test')  # 12 examples.
  first = next(input_pipeline.eval_dataset(data, config, global_batch_size=4).as_numpy_iterator())
  examples = input_pipeline.eval_examples(data, config, 3)
  assert examples['image'].dtype == np.uint8 and examples['image'].shape == (3, 64, 64, 3)
  np.testing.assert_array_equal(examples['image'], first['image'][:3])
  np.testing.assert_array_equal(examples['label'], first['label'][:3])
  assert len(input_pipeline.eval_examples(data, config, 50)['label']) == 12


def test_encoded_images_are_held_unpadded(train_split):
  """Each image keeps its own size in the pipeline's copy (a fixed-width bytes array would pad
  every image to the largest one's size: memory N x max, not the sum)."""
  source = input_pipeline._Source(train_split, resize_size=72)
  sizes = [len(image) for image in source.images.numpy()]
  assert sizes == [len(image) for image in train_split.encoded] and len(set(sizes)) > 1


def test_a_first_build_prints_no_tfds_status_lines(tmp_path, capfd):
  """Training's first build logs our own summary, not TFDS's 'Downloading and preparing'."""
  config = dataset_config(
      name='synthetic', data_dir=str(tmp_path), resize_size=40, crop_size=32,
      **{'synthetic.num_classes': 2, 'synthetic.image_size': 32,
         'synthetic.train_per_class': 2, 'synthetic.test_per_class': 1})
  assert input_pipeline.load_split(config, 'test').num_examples == 2
  out, err = capfd.readouterr()
  assert 'Downloading and preparing' not in out + err and 'Generating' not in out + err
