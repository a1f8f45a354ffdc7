"""What every clan-jax TFDS builder shares: features, image normalisation, skipped files.

Each example holds the image as stored bytes (JPEG or PNG that TensorFlow decodes to the
intended RGB image: clan_jax.datasets.preprocess.normalize_encoded_image), its file name and a
ClassLabel `label` with the class names. Files that cannot be decoded are skipped, never a
crash; their names and reasons land in the dataset's metadata (`skipped`), which prepare
and training print.
"""

import io
from typing import Callable, Collection, Iterator, Optional

import tensorflow_datasets as tfds
from PIL import Image

from clan_jax.datasets.preprocess import UndecodableImageError, normalize_encoded_image
from clan_jax.datasets.sources import DatasetFiles

SKIPPED_KEY = 'skipped'
WARNINGS_KEY = 'warnings'


class ClanBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the project's builders; subclasses define files, splits and examples."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First clan-jax release.'}
  TITLE = ''
  OFFICIAL_FILES: tuple = ()  # The original files read from manual_dir (sources.OfficialFile).
  HAS_BBOX = False  # Whether examples carry the dataset's bounding box as `bbox`.

  def __init__(self, *, manual_dir: str = '', **kwargs):
    self.manual_dir = manual_dir
    super().__init__(**kwargs)

  def extra_features(self) -> dict:
    return {'bbox': tfds.features.BBoxFeature()} if self.HAS_BBOX else {}

  def dataset_files(self):
    """The located original files (MissingFilesError naming every expected one)."""
    return DatasetFiles(self.TITLE, self.manual_dir, self.OFFICIAL_FILES)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.TITLE,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(),
            'image/filename': tfds.features.Text(),
            'label': tfds.features.ClassLabel(),  # Names are set when the files are read.
            **self.extra_features(),
        }),
        supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict(),
    )

  def set_class_names(self, names: list[str]) -> None:
    self.info.features['label'].names = list(names)

  def record_skipped(self, split: str, name: str, reason: str) -> None:
    skipped = self.info.metadata.setdefault(SKIPPED_KEY, {})
    skipped.setdefault(split, []).append(f'{name}: {reason}')

  def record_warning(self, message: str) -> None:
    self.info.metadata.setdefault(WARNINGS_KEY, []).append(message)

  def listed_members(self, files, split: str, archive: str, key_of: Callable[[str], str],
                     listed: Collection[str], listed_in: str,
                     name_of: Callable[[str], str] = str) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of every listed file in `archive`, once each; then records each listed
    file that the archive lacks as skipped ('listed in <listed_in> but not in <archive>')."""
    seen = set()
    for member, data in files.iter_members(archive, lambda m: key_of(m) in listed):
      key = key_of(member)
      if key not in seen:  # A re-packed archive may hold a file twice.
        seen.add(key)
        yield key, data
    for key in sorted(set(listed) - seen):
      self.record_skipped(split, name_of(key), f'listed in {listed_in} but not in {archive}')

  def encode_image(self, split: str, name: str, data: bytes) -> Optional[bytes]:
    """The normalised image bytes, or None (recorded as skipped) if undecodable."""
    try:
      return normalize_encoded_image(data, name)
    except UndecodableImageError as e:
      self.record_skipped(split, name, str(e).split(': ', 1)[-1])
      return None


def skipped_files(builder: tfds.core.DatasetBuilder) -> dict[str, list[str]]:
  return dict(builder.info.metadata.get(SKIPPED_KEY, {})) if builder.info.metadata else {}


def build_warnings(builder: tfds.core.DatasetBuilder) -> list[str]:
  return list(builder.info.metadata.get(WARNINGS_KEY, [])) if builder.info.metadata else []


def pixel_bbox(encoded: bytes, xmin: float, ymin: float, xmax: float,
               ymax: float) -> tfds.features.BBox:
  """A box in pixels of the stored image -> a normalised BBox, clipped to [0, 1]."""
  with Image.open(io.BytesIO(encoded)) as image:  # Reads the header only.
    width, height = image.size
  clip = lambda v: min(max(v, 0.0), 1.0)
  return tfds.features.BBox(ymin=clip(ymin / height), xmin=clip(xmin / width),
                            ymax=clip(ymax / height), xmax=clip(xmax / width))
