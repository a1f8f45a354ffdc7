"""Input-pipeline throughput (the command: clan_jax/benchmark_pipeline.py): an in-memory
split of JPEG photos of CUB's typical size, and the training pipeline's images/s over it."""

import io
import time

import numpy as np

from clan_jax.datasets import input_pipeline
from clan_jax.datasets.input_pipeline import SplitData


def photo_split(num_images: int, seed: int = 0) -> SplitData:
  """JPEG photos (smooth random content, 500x375, like CUB's) with random labels."""
  from PIL import Image  # Late: only this benchmark encodes images.

  rng = np.random.default_rng(seed)
  encoded = []
  for _ in range(num_images):
    rows = np.cumsum(rng.integers(-6, 7, (375, 1, 3)), axis=0)
    cols = np.cumsum(rng.integers(-6, 7, (1, 500, 3)), axis=1)
    noise = rng.integers(-20, 21, (375, 500, 3))
    pixels = np.clip(rows + cols + noise + 128, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format='JPEG', quality=90)
    encoded.append(buffer.getvalue())
  return SplitData(name='benchmark', labels=rng.integers(0, 200, num_images).astype(np.int32),
                   class_names=[str(i) for i in range(200)],
                   encoded=np.asarray(encoded, dtype=object))


def images_per_second(data: SplitData, dataset_config, batch_size: int, batches: int,
                      threads: int) -> float:
  ds = input_pipeline.train_dataset(data, dataset_config, global_batch_size=batch_size,
                                    threads=threads)
  iterator = ds.as_numpy_iterator()
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)
