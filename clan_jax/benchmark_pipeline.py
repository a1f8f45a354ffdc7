"""Benchmark (not a test): training-pipeline images/s per CPU core, with and without the cache.

    python -m clan_jax.benchmark_pipeline [--crop_size=448 --resize_size=512 --threads=1]

Builds an in-memory split of JPEG photos of CUB's typical size (500x375, quality 90; no
dataset files needed), then times `input_pipeline.train_dataset` (random crop + flip) with
its tf.data threads capped at --threads: from the encoded JPEGs (decode + resize every
step) and from the uint8 cache (crop + flip only). Prints images/s and images/s per thread.
"""

import json
import time

from absl import flags

from clan_jax.base import cli
from clan_jax.datasets import input_pipeline
from clan_jax.perf.pipeline_throughput import images_per_second, photo_split

flags.DEFINE_integer('crop_size', 448, 'Training crop.')
flags.DEFINE_integer('resize_size', 512, 'Images are resized to this before the crop.')
flags.DEFINE_integer('num_images', 256, 'Distinct images in the split.', lower_bound=1)
flags.DEFINE_integer('batch_size', 32, 'Batch size.', lower_bound=1)
flags.DEFINE_integer('batches', 30, 'Timed batches per mode (after 3 warm-up batches).',
                     lower_bound=1)
flags.DEFINE_integer('threads', 1, 'tf.data threads (the per-core figure divides by this).',
                     lower_bound=1)
flags.DEFINE_string('json', '', 'Also write the records to this JSON file.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import tensorflow as tf
  from configs import default

  config = default.get_dataset_config()
  config.update(resize_size=FLAGS.resize_size, crop_size=FLAGS.crop_size)
  data = photo_split(FLAGS.num_images)
  records = []
  start = time.perf_counter()
  cached = input_pipeline.cache_split(data, FLAGS.resize_size)
  cache_seconds = time.perf_counter() - start
  for mode, split in (('encoded', data), ('cache', cached)):
    rate = images_per_second(split, config, FLAGS.batch_size, FLAGS.batches, FLAGS.threads)
    records.append({'mode': mode, 'crop_size': FLAGS.crop_size, 'resize_size': FLAGS.resize_size,
                    'threads': FLAGS.threads, 'images_per_sec': round(rate, 1),
                    'images_per_sec_per_thread': round(rate / FLAGS.threads, 1)})
  print(f'tensorflow {tf.__version__}; {FLAGS.num_images} JPEGs of 500x375; cache built in '
        f'{cache_seconds:.1f} s (all cores)')
  print(f'{"mode":<9} {"crop":>5} {"threads":>8} {"images/s":>9} {"per thread":>11}')
  for r in records:
    print(f'{r["mode"]:<9} {r["crop_size"]:>5} {r["threads"]:>8} {r["images_per_sec"]:>9.1f} '
          f'{r["images_per_sec_per_thread"]:>11.1f}')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(records, f, indent=2)


def run() -> None:
  """The console command `clan-benchmark-pipeline`."""
  cli.run(main)  # A bad flag: one `error:` line and exit status 2.


if __name__ == '__main__':
  run()
