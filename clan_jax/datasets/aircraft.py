"""FGVC-Aircraft 2013b from the user's `fgvc-aircraft-2013b.tar.gz` (or its extracted folder).

Splits `trainval` (6,667) and `test` (3,333), the standard protocol (the archive's `train`
and `val` halves of trainval are not built). `label` is the index of the image's name in
data/variants.txt (100 classes), families.txt (70) or manufacturers.txt (30): the `label`
level of the builder config, named from that file. The box of images_box.txt (pixels) is
kept as `bbox`, normalised by the stored image's size and clipped.

Every image carries a 20-pixel copyright banner at the bottom; with `crop_banner` (the
default) it is removed. The cropped image is TensorFlow's decode of the original (the
decoder the input pipeline uses: clan_jax.datasets.preprocess.decode_tf) minus its bottom 20 rows,
stored as PNG, losslessly, so training sees exactly the original pixels, less the banner.
PNG takes about 3-5x the space of the original JPEGs.
"""

import dataclasses
import io
import re

import tensorflow_datasets as tfds
from PIL import Image

from clan_jax.datasets.base import ClanBuilder, pixel_bbox
from clan_jax.datasets.preprocess import decode_tf
from clan_jax.datasets.sources import OfficialFile
from clan_jax.base.errors import ConfigError, UserError

ARCHIVE = OfficialFile(
    filename='fgvc-aircraft-2013b.tar.gz',
    source='https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (fgvc-aircraft-2013b.tar.gz)',
    sha256='',  # No official SHA-256 is published (nor in TFDS, which has no such builder).
    extracted_dir='fgvc-aircraft-2013b')
# Label level -> the file listing its class names, in label order.
LEVELS = {'variant': 'variants.txt', 'family': 'families.txt',
          'manufacturer': 'manufacturers.txt'}
SPLITS = ('trainval', 'test')
BANNER_ROWS = 20
PNG_COMPRESSION = 3  # zlib level: faster than the default, files a little larger (BENCHMARKS.md).


@dataclasses.dataclass(eq=False)
class AircraftConfig(tfds.core.BuilderConfig):
  label: str = 'variant'
  crop_banner: bool = True


def aircraft_config(label: str = 'variant', crop_banner: bool = True) -> AircraftConfig:
  """The config of a label level and banner choice; its name names both, e.g.
  'variant_banner_cropped', so each setting is built into its own directory."""
  if label not in LEVELS:
    raise ConfigError(f'dataset.aircraft_label={label!r} is invalid; allowed values: '
                      f'{", ".join(repr(level) for level in LEVELS)}.')
  banner = 'banner_cropped' if crop_banner else 'with_banner'
  return AircraftConfig(
      name=f'{label}_{banner}', label=label, crop_banner=bool(crop_banner),
      description=f'labels: {label} ({LEVELS[label]}); copyright banner: '
                  f'{"cropped" if crop_banner else "kept"}')


def parse_names(data: bytes) -> list[str]:
  """One class name a line (names hold spaces, e.g. 'Boeing 707')."""
  return [line.strip() for line in data.decode('utf-8').splitlines() if line.strip()]


def parse_labels(data: bytes, name: str, index: dict[str, int]) -> dict[str, int]:
  """'<id> <class name>' lines -> {id: label}."""
  labels = {}
  for line in data.decode('utf-8').splitlines():
    if not line.strip():
      continue
    image_id, _, class_name = line.strip().partition(' ')
    if class_name.strip() not in index:
      raise UserError(f'{name}: image {image_id} has the class {class_name!r}, which the '
                      'class list lacks; the archive is not the expected one.')
    labels[image_id] = index[class_name.strip()]
  return labels


def parse_boxes(data: bytes) -> dict[str, tuple[float, ...]]:
  """images_box.txt's '<id> xmin ymin xmax ymax' lines (pixels) -> {id: box}."""
  rows = (line.split() for line in data.decode('utf-8').splitlines())
  return {fields[0]: tuple(float(v) for v in fields[1:]) for fields in rows if len(fields) == 5}


def crop_banner(encoded: bytes) -> bytes:
  """TensorFlow's decode of the image minus its bottom BANNER_ROWS rows, as PNG."""
  import tensorflow as tf  # Late: slow to load; TFDS, and so this builder, load it on use.

  image = decode_tf(encoded)
  return tf.io.encode_png(image[:-BANNER_ROWS], compression=PNG_COMPRESSION).numpy()


class ClanAircraft(ClanBuilder):
  """FGVC-Aircraft 2013b: 100 variants, 70 families or 30 manufacturers."""

  TITLE = 'FGVC-Aircraft 2013b'
  OFFICIAL_FILES = (ARCHIVE,)
  HAS_BBOX = True
  MANUAL_DOWNLOAD_INSTRUCTIONS = f'Place {ARCHIVE.filename} from {ARCHIVE.source} in manual_dir.'
  BUILDER_CONFIGS = [aircraft_config(label, crop) for label in LEVELS for crop in (True, False)]

  def __init__(self, *, label: str = 'variant', crop_banner: bool = True, **kwargs):
    kwargs.setdefault('config', aircraft_config(label, crop_banner).name)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded: the files come from manual_dir.
    level = self.builder_config.label
    files = self.dataset_files()
    lists = {split: f'data/images_{level}_{split}.txt' for split in SPLITS}
    tables = files.read_members(ARCHIVE.filename,
                                (f'data/{LEVELS[level]}', 'data/images_box.txt',
                                 *lists.values()))
    names = parse_names(tables[f'data/{LEVELS[level]}'])
    self.set_class_names(names)
    index = {name: i for i, name in enumerate(names)}
    labels = {split: parse_labels(tables[path], path, index) for split, path in lists.items()}
    boxes = parse_boxes(tables['data/images_box.txt'])
    return {split: self._generate_examples(files, split, lists[split], boxes, labels[split])
            for split in SPLITS}

  def _generate_examples(self, files, split, listed_in, boxes, labels):
    for image_id, data in self.listed_members(files, split, ARCHIVE.filename, _image_id, labels,
                                              listed_in, name_of=lambda i: f'{i}.jpg'):
      name = f'{image_id}.jpg'
      encoded = self._encode(split, name, data)
      if encoded is None:
        continue
      box = boxes.get(image_id, (0.0, 0.0, float('inf'), float('inf')))  # None: all of it.
      yield image_id, {'image': encoded, 'image/filename': name, 'label': labels[image_id],
                       'bbox': pixel_bbox(encoded, *box)}

  def _encode(self, split, name, data):
    """The normalised image, without its banner when the config says so; None if skipped."""
    encoded = self.encode_image(split, name, data)
    if encoded is None or not self.builder_config.crop_banner:
      return encoded
    with Image.open(io.BytesIO(encoded)) as image:
      height = image.size[1]
    if height <= BANNER_ROWS:
      self.record_skipped(split, name, f'{height} pixels high: nothing is left once the '
                          f'{BANNER_ROWS}-pixel banner is cropped')
      return None
    return crop_banner(encoded)


_IMAGE_RE = re.compile(r'(?:^|/)images/([^/]+)\.jpg$')


def _image_id(member: str) -> str:
  """'fgvc-aircraft-2013b/data/images/0034309.jpg' -> '0034309' (the id the lists use)."""
  match = _IMAGE_RE.search(member)
  return match.group(1) if match else ''
