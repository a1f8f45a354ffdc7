"""The tf.data input pipeline: deterministic, resumable, exact in evaluation, multi-process.

A split (a name, or a TFDS slice such as 'train[:90%]', whose examples are then all there
is: N below is the slice's size) is loaded once into memory (`load_split`): the stored
encoded images (FGVC datasets are small: CUB's train split is ~0.6 GB of JPEGs), or, with
`dataset.cache`, the decoded images already resized to resize_size (uint8). Examples are
then addressed by position in an endless stream:

    stream position t -> epoch t // N, record index_shuffle(t % N; seed, epoch)
    global step s holds positions [s B, (s + 1) B); process p takes [s B + p B/P, s B + (p+1) B/P)

and every random choice (crop, flip, colour) is a stateless op keyed on (seed, t). A run
resumed at step k therefore sees exactly the batches an uninterrupted run sees from k on,
P processes together see what one process would, and the cache changes nothing but speed.
Evaluation walks positions 0..N-1 once, padding the last batch and marking padding with
`mask` = 0, so every example counts exactly once.

Images leave the pipeline as uint8 (4x fewer bytes to move); the jitted steps normalise
them (`preprocess.normalize`).
"""

import dataclasses
import logging
import math
import re
import time
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from clan_jax import datasets
from clan_jax.datasets import preprocess
from clan_jax.base import quiet
from clan_jax.base.errors import ConfigError
from clan_jax.base.text import plural

# Salts that keep the order stream and the augmentation stream independent.
_ORDER_SALT = 0x5EED
_AUGMENT_SALT = 0xA116
# The slice of one part of a TFDS split, e.g. '[:90%]' of 'train[:90%]'.
_SLICE_RE = re.compile(r'\[.*\]\s*$')


@dataclasses.dataclass
class SplitData:
  """One split in memory: encoded images, or resized uint8 images when cached."""
  name: str  # The split as configured: a name or a TFDS slice, e.g. 'train[:90%]'.
  labels: np.ndarray  # int32 (N,)
  class_names: list[str]
  encoded: np.ndarray = None  # object (N,) of bytes, when not cached
  images: np.ndarray = None  # uint8 (N, R, R, 3), when cached
  resize_size: int = 0  # R of `images`
  # Every split of the dataset it came from, e.g. ('train', 'test'): what resolve_val_split
  # chooses among.
  dataset_splits: tuple[str, ...] = ()

  @property
  def num_examples(self) -> int:
    return len(self.labels)

  @property
  def cached(self) -> bool:
    return self.images is not None


def split_base_names(split: str) -> list[str]:
  """The split names a split or TFDS slice reads: 'train[:90%]+val' -> ['train', 'val']."""
  return [_SLICE_RE.sub('', part).strip() for part in split.split('+')]


def _slice_hint(split: str, splits) -> str:
  """How to read the missing split from train instead (e.g. a folder with only train/)."""
  if 'train' not in splits or 'train' in split_base_names(split):
    return " (a TFDS slice such as 'train[:90%]' works too)"
  return ("; to hold part of train out, pass --config.dataset.train_split='train[:90%]' "
          "--config.dataset.eval_split='train[90%:]'")


def check_split(builder, split: str) -> int:
  """The number of examples `split` (a name or a TFDS slice) reads from the built dataset;
  one ConfigError listing the splits when it names none or selects no example."""
  splits = builder.info.splits
  listing = ', '.join(f'{name} ({info.num_examples:,})' for name, info in splits.items())
  title = datasets.dataset_title(builder)
  try:
    count = splits[split].num_examples
  except (KeyError, ValueError) as e:
    # TFDS's reason, less its own list of the splits (ours gives their sizes too).
    reason = str(e).splitlines()[0].split('. Should be one of')[0].rstrip('.')
    raise ConfigError(f'split {split!r} cannot be read from {title} ({reason}); its splits: '
                      f'{listing}{_slice_hint(split, splits)}.') from None
  if count <= 0:
    raise ConfigError(f'split {split!r} of {title} selects no example; its splits: {listing}.')
  return count


def _is_covered(candidate: str, train_names: list[str]) -> bool:
  """Whether training reads the validation split `candidate`: by name, or as part of a
  train+validation split such as 'trainval' (FGVC-Aircraft) or 'train_validation'."""
  return any(name == candidate or (name.startswith('train') and name.endswith(candidate))
             for name in train_names)


def resolve_val_split(dataset_config: Any, available_splits: Sequence[str]) -> str:
  """The split the best checkpoint is chosen on ('' for none) from dataset.val_split.

  'auto': the dataset's validation split ('validation' or 'val') when it has one that
  neither the train split nor the eval split reads (aircraft's 'trainval' contains its
  'val'); '': none; anything else is a split name or TFDS slice whose splits must exist
  in `available_splits` (its slice bounds are checked when it is loaded).
  """
  requested = dataset_config.val_split
  if not requested:
    return ''
  if requested == 'auto':
    used = split_base_names(dataset_config.train_split)
    evaluated = split_base_names(dataset_config.eval_split)
    for candidate in ('validation', 'val'):
      if (candidate in available_splits and not _is_covered(candidate, used)
          and candidate not in evaluated):
        return candidate
    return ''
  unknown = [name for name in split_base_names(requested) if name not in available_splits]
  if unknown:
    raise ConfigError(f'dataset.val_split={requested!r} names no split of the dataset '
                      f'({", ".join(unknown)}); its splits: {", ".join(available_splits)}; '
                      "or 'auto' (its validation split, if any) or '' (none).")
  return requested


def load_split(dataset_config: Any, split: str, builder=None, build: bool = True) -> SplitData:
  """Reads a split (a name or a TFDS slice such as 'train[:90%]') into memory, building the
  dataset first if it is not built yet (or, with build=False, e.g. in a job of several
  processes, raising a ConfigError that says how)."""
  builder = builder or datasets.get_builder(dataset_config)
  title = datasets.dataset_title(builder)
  if not builder.is_prepared() and not build:
    raise ConfigError(
        f'{title} is not built in {builder.data_dir}, and several processes must not '
        'build it at once: build it first with `python -m clan_jax.datasets.prepare '
        '--config=<this config> [--config.dataset.KEY=VALUE ...]`, once on storage that every '
        'host reads or on every host.')
  if not builder.is_prepared():
    logging.info('building %s once under %s', title, builder.data_dir)
    quiet.quiet_tfds()  # Its progress bars leave '[A' escapes in the log: the summary says it.
    with quiet.tfds_status_lines_hidden():
      summary = datasets.prepare(dataset_config, builder=builder)
    logging.info('%s', summary.format())
  check_split(builder, split)
  image_key, label_key = datasets.feature_keys(dataset_config)
  start = time.time()
  # Images stay encoded (decoded per step); others, e.g. segmentation masks, are not needed.
  features = builder.info.features
  decoders = {key: tfds.decode.SkipDecoding() for key in features.keys()
              if isinstance(features[key], tfds.features.Image)}
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                          read_config=tfds.ReadConfig(interleave_cycle_length=1))
  encoded, labels = [], []
  for example in ds.as_numpy_iterator():
    encoded.append(example[image_key])
    labels.append(example[label_key])
  data = SplitData(name=split, labels=np.asarray(labels, np.int32),
                   class_names=list(datasets.label_feature(builder, dataset_config).names),
                   encoded=np.asarray(encoded, dtype=object),
                   dataset_splits=tuple(builder.info.splits))
  logging.info('loaded %s/%s: %s, %.0f MB encoded, %.1f s', title, split,
               plural(data.num_examples, 'example'), sum(map(len, encoded)) / 1e6, time.time() - start)
  if dataset_config.cache:
    data = cache_split(data, dataset_config.resize_size)
  return data


def cache_split(data: SplitData, resize_size: int) -> SplitData:
  """Decodes and resizes every image once (in parallel) into a uint8 array."""
  start = time.time()
  images = np.empty((data.num_examples, resize_size, resize_size, 3), np.uint8)
  ds = tf.data.Dataset.from_tensor_slices(data.encoded)  # Object array: see _Source.
  ds = ds.map(lambda e: preprocess.resize_tf(preprocess.decode_tf(e), resize_size),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
  offset = 0
  for batch in ds.as_numpy_iterator():
    images[offset:offset + len(batch)] = batch
    offset += len(batch)
  logging.info('cached %s: %s at %d px, %.1f GB, %.1f s', data.name,
               plural(data.num_examples, 'image'),
               resize_size, images.nbytes / 1e9, time.time() - start)
  return dataclasses.replace(data, encoded=None, images=images, resize_size=resize_size)


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ConfigError(f'batch_size={global_batch_size} is not divisible by the {process_count} '
                      'processes; each process takes an equal slice of every global batch.')
  return global_batch_size // process_count


def _global_positions(local_positions, global_batch: int, local_batch: int, process_index: int):
  """Local position j of this process -> its global stream position."""
  step, offset = local_positions // local_batch, local_positions % local_batch
  return step * global_batch + process_index * local_batch + offset


class _Source:
  """Gathers record i's image (encoded or cached) and label inside tf.data."""

  def __init__(self, data: SplitData, resize_size: int):
    if data.cached and data.resize_size != resize_size:
      raise ValueError(f'the cache holds {data.resize_size}-px images, not {resize_size}.')
    self.resize_size = resize_size
    self.labels = tf.constant(data.labels)
    # Variables, not constants: a multi-GB constant would be copied into every graph. The
    # object array of bytes goes in as it is: astype(bytes) would pad every image to the
    # largest one's size (and strip trailing NUL bytes).
    with tf.device('/cpu:0'):
      self.images = tf.Variable(data.images if data.cached else data.encoded, trainable=False)
    self.cached = data.cached

  def resized_image(self, record):
    image = tf.gather(self.images, record)
    if self.cached:
      return image
    return preprocess.resize_tf(preprocess.decode_tf(image), self.resize_size)


def _augment(image, seed, dataset_config: Any):
  """Train-time transform of a resized uint8 image; every random op is keyed on `seed`."""
  augment, crop = dataset_config.augment, dataset_config.crop_size
  crop_seed, flip_seed, jitter_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=3))
  if augment.random_resized_crop:
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4], tf.float32), seed=crop_seed,
        area_range=tuple(augment.crop_area), aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = preprocess.resize_tf(tf.slice(image, begin, size), crop)
  elif augment.random_crop:
    image = tf.image.stateless_random_crop(image, (crop, crop, 3), seed=crop_seed)
  else:
    image = preprocess.center_crop_tf(image, crop)
  if augment.flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  if augment.color_jitter:
    image = _color_jitter(image, jitter_seed, augment.color_jitter)
  return image


def _color_jitter(image, seed, strength: float):
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
  x = tf.cast(image, tf.float32) / 255.0
  x = tf.image.stateless_random_brightness(x, 0.4 * strength, seed=seeds[0])
  x = tf.image.stateless_random_contrast(x, 1 - 0.4 * strength, 1 + 0.4 * strength, seed=seeds[1])
  x = tf.image.stateless_random_saturation(x, 1 - 0.4 * strength, 1 + 0.4 * strength,
                                           seed=seeds[2])
  return tf.cast(tf.clip_by_value(tf.round(x * 255.0), 0, 255), tf.uint8)


def _options(threads: int = 0) -> tf.data.Options:
  """Deterministic order; `threads` > 0 caps the pipeline's threads (0: TensorFlow decides)."""
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  if threads:
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
  return options


def train_dataset(data: SplitData, dataset_config: Any, *, global_batch_size: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  threads: int = 0) -> tf.data.Dataset:
  """The endless training stream of this process's slices of each global batch from start_step.

  Elements: {'image': uint8 (L, C, C, 3), 'label': int32 (L,), 'index': int64 (L,)} with
  L = global_batch_size / process_count; 'index' is the record index in the split.
  """
  local = _local_batch_size(global_batch_size, process_count)
  size, seed = data.num_examples, int(dataset_config.shuffle_seed)
  source = _Source(data, dataset_config.resize_size)

  @tf.autograph.experimental.do_not_convert  # Plain graph code: no Python control flow on tensors.
  def load(local_position):
    position = _global_positions(local_position, global_batch_size, local, process_index)
    epoch = position // size
    order_seed = tf.stack([tf.constant(seed ^ _ORDER_SALT, tf.int64), epoch])
    record = tf.random.experimental.index_shuffle(position % size, order_seed, size - 1)
    augment_seed = tf.stack([tf.constant(seed ^ _AUGMENT_SALT, tf.int64), position])
    image = _augment(source.resized_image(record), augment_seed, dataset_config)
    return {'image': image, 'label': tf.gather(source.labels, record), 'index': record}

  ds = tf.data.Dataset.range(start_step * local, np.iinfo(np.int64).max)
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(
      _options(threads))


def eval_dataset(data: SplitData, dataset_config: Any, *, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Every example once, in order; the last global batch padded, padding has mask 0.

  Elements: {'image', 'label', 'index', 'mask': bool (L,)}; the dataset has
  ceil(N / global_batch_size) elements in every process.
  """
  local = _local_batch_size(global_batch_size, process_count)
  size = data.num_examples
  num_batches = math.ceil(size / global_batch_size)
  source = _Source(data, dataset_config.resize_size)

  @tf.autograph.experimental.do_not_convert
  def load(local_position):
    position = _global_positions(local_position, global_batch_size, local, process_index)
    record = tf.minimum(position, size - 1)
    image = preprocess.center_crop_tf(source.resized_image(record), dataset_config.crop_size)
    return {'image': image, 'label': tf.gather(source.labels, record), 'index': record,
            'mask': position < size}

  ds = tf.data.Dataset.range(num_batches * local)
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(
      _options())


def eval_examples(data: SplitData, dataset_config: Any, count: int) -> dict:
  """The first `count` examples of the split (fewer if it is smaller), as `eval_dataset` gives
  them: {'image': uint8 (n, C, C, 3), 'label': int32 (n,)}. Without tf.data: for a few images
  (the attention figures) a dataset would copy the whole split into a tf.Variable."""
  count = min(count, data.num_examples)
  crop = dataset_config.crop_size
  if data.cached:
    images = [preprocess.center_crop(data.images[i], crop) for i in range(count)]
  else:
    images = [preprocess.eval_transform(data.encoded[i], dataset_config.resize_size, crop)
              for i in range(count)]
  return {'image': np.stack(images), 'label': data.labels[:count]}


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Whole global batches in one pass over the training split (the stream runs on)."""
  return max(1, num_examples // global_batch_size)
