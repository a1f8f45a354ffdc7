"""CUB-200-2011 from the user's `CUB_200_2011.tgz` (or its extracted folder).

Splits `train` (5,994) and `test` (5,794) from `train_test_split.txt`; `label` = the class
number NNN - 1 (as TFDS's `caltech_birds2011`), named from `classes.txt`
('001.Black_footed_Albatross', ...); the bounding box from `bounding_boxes.txt`. The
optional `segmentations.tgz` is not needed (CLAN uses no masks).
"""

import re

import tensorflow_datasets as tfds

from clan_jax.datasets.base import ClanBuilder, pixel_bbox
from clan_jax.datasets.sources import OfficialFile

ARCHIVE = OfficialFile(
    filename='CUB_200_2011.tgz',
    source='https://data.caltech.edu/records/65de6-vp158 (CUB_200_2011.tgz)',
    sha256='0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081',
    size=1150585339,
    extracted_dir='CUB_200_2011')
METADATA_FILES = ('images.txt', 'image_class_labels.txt', 'train_test_split.txt',
                  'classes.txt', 'bounding_boxes.txt')


def parse_table(data: bytes) -> dict[str, list[str]]:
  """'<id> <fields...>' lines -> {id: fields}."""
  rows = {}
  for line in data.decode('utf-8').splitlines():
    parts = line.split()
    if parts:
      rows[parts[0]] = parts[1:]
  return rows


class ClanCub(ClanBuilder):
  """CUB-200-2011 (Caltech-UCSD Birds), 200 classes."""

  TITLE = 'CUB-200-2011'
  OFFICIAL_FILES = (ARCHIVE,)
  HAS_BBOX = True
  MANUAL_DOWNLOAD_INSTRUCTIONS = f'Place {ARCHIVE.filename} from {ARCHIVE.source} in manual_dir.'

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded: the files come from manual_dir.
    files = self.dataset_files()
    tables = {name: parse_table(data) for name, data in
              files.read_members(ARCHIVE.filename, METADATA_FILES).items()}
    classes = sorted(tables['classes.txt'].items(), key=lambda item: int(item[0]))
    self.set_class_names([fields[0] for _, fields in classes])
    splits = {'train': {}, 'test': {}}
    for image_id, (path,) in tables['images.txt'].items():
      split = 'train' if tables['train_test_split.txt'][image_id][0] == '1' else 'test'
      splits[split][path] = image_id
    return {split: self._generate_examples(files, split, paths, tables)
            for split, paths in splits.items()}

  def _generate_examples(self, files, split, paths, tables):
    for path, data in self.listed_members(files, split, ARCHIVE.filename, _image_path, paths,
                                          'images.txt'):
      image_id = paths[path]
      encoded = self.encode_image(split, path, data)
      if encoded is None:
        continue
      yield image_id, {
          'image': encoded,
          'image/filename': path,
          'label': int(tables['image_class_labels.txt'][image_id][0]) - 1,
          'bbox': _bbox(tables['bounding_boxes.txt'][image_id], encoded),
      }


_IMAGE_RE = re.compile(r'(?:^|/)images/(.+)$')


def _image_path(member: str) -> str:
  """'CUB_200_2011/images/001.X/x.jpg' -> '001.X/x.jpg' (the path images.txt uses)."""
  match = _IMAGE_RE.search(member)
  return match.group(1) if match else ''


def _bbox(fields: list[str], encoded: bytes) -> tfds.features.BBox:
  """bounding_boxes.txt's (x, y, width, height) in pixels -> a normalised, clipped BBox."""
  x, y, w, h = (float(v) for v in fields)
  return pixel_bbox(encoded, x, y, x + w, y + h)
