"""The embedded synthetic fine-grained dataset as a TFDS builder.

Images are rendered by clan_jax.datasets.synthetic_images from a SyntheticSpec (the
`dataset.synthetic` config section) and stored as PNG; nothing is downloaded or shipped.
Each spec gets its own builder config, named after its fields, so changing a knob builds
a new dataset and keeps the old one.
"""

import dataclasses
import hashlib
import io
import json

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from clan_jax.datasets import synthetic_images
from clan_jax.datasets.base import ClanBuilder


def spec_config(spec: synthetic_images.SyntheticSpec) -> tfds.core.BuilderConfig:
  fields = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
  digest = hashlib.sha256(fields.encode()).hexdigest()[:10]
  return tfds.core.BuilderConfig(
      name=f'c{spec.num_classes}_s{spec.image_size}_seed{spec.seed}_{digest}', description=fields)


class ClanSynthetic(ClanBuilder):
  """Procedural fine-grained classes that differ only in small local details."""

  TITLE = 'synthetic fine-grained dataset'

  def __init__(self, *, spec: synthetic_images.SyntheticSpec = None, **kwargs):
    self.spec = spec or synthetic_images.SyntheticSpec()
    kwargs.setdefault('config', spec_config(self.spec))
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    self.set_class_names(synthetic_images.class_names(self.spec))
    return {split: self._generate_examples(split)
            for split in synthetic_images.split_sizes(self.spec)}

  def _generate_examples(self, split):
    for index, image, label in synthetic_images.generate(self.spec, split):
      buffer = io.BytesIO()
      Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format='PNG')
      name = f'{split}/{index:06d}.png'
      yield name, {'image': buffer.getvalue(), 'image/filename': name, 'label': int(label)}
