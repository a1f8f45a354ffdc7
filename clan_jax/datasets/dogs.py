"""Stanford Dogs from the user's `images.tar` (or its extracted `Images/`) and `lists.tar`.

Splits `train` (12,000) and `test` (8,580) from lists.tar's train_list.mat and
test_list.mat; `label` = the lists' `labels` - 1, named after the breed folders
('n02085620-Chihuahua', ...; labels follow their sorted order, as TFDS's `stanford_dogs`
with its lower-cased names). The boxes of the optional annotation.tar are not needed (CLAN
uses none). lists.tar has no top folder, so it is read as the archive only.
"""

import posixpath

from clan_jax.datasets.base import ClanBuilder
from clan_jax.datasets.sources import OfficialFile, load_mat, mat_field
from clan_jax.base.errors import UserError
from clan_jax.base.text import plural

_SOURCE = 'http://vision.stanford.edu/aditya86/ImageNetDogs/'
IMAGES = OfficialFile(
    filename='images.tar', source=f'{_SOURCE} (images.tar)',
    sha256='a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58',
    size=793579520, extracted_dir='Images')
LISTS = OfficialFile(
    filename='lists.tar', source=f'{_SOURCE} (lists.tar)',
    sha256='34b47cacd9a98b5d150e084f24d29391c084c55272295ec65c85651bc35f4d6c',
    size=481280)
SPLITS = ('train', 'test')


def parse_list(data: bytes, name: str) -> dict[str, int]:
  """A <split>_list.mat -> {'<breed folder>/<file>.jpg': label}."""
  mat = load_mat(data, name)
  paths, labels = mat_field(mat, 'file_list', name), mat_field(mat, 'labels', name)
  if len(paths) != len(labels):
    raise UserError(f'{name}: {plural(len(paths), "file")} but {plural(len(labels), "label")}; it is not the '
                    'expected file.')
  return {str(path): int(label) - 1 for path, label in zip(paths, labels)}


def class_names(lists: dict[str, dict[str, int]]) -> list[str]:
  """The breed folder of each label, checked: one folder a label, no label missing."""
  folders = {}
  for split, paths in lists.items():
    for path, label in paths.items():
      folder = path.split('/')[0]
      if folders.setdefault(label, folder) != folder:
        raise UserError(f'lists.tar: {split}_list.mat gives label {label + 1} to both '
                        f'{folders[label]} and {folder}; it is not the expected file.')
  if sorted(folders) != list(range(len(folders))):
    raise UserError(f'lists.tar: the labels {sorted(l + 1 for l in folders)} are not 1..N; '
                    'it is not the expected file.')
  return [folders[label] for label in range(len(folders))]


class ClanDogs(ClanBuilder):
  """Stanford Dogs, 120 breeds (from ImageNet)."""

  TITLE = 'Stanford Dogs'
  OFFICIAL_FILES = (IMAGES, LISTS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = (f'Place {IMAGES.filename} and {LISTS.filename} from '
                                  f'{_SOURCE} in manual_dir.')

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded: the files come from manual_dir.
    files = self.dataset_files()
    mats = files.read_members(LISTS.filename, [f'{split}_list.mat' for split in SPLITS])
    lists = {split: parse_list(mats[f'{split}_list.mat'], f'lists.tar: {split}_list.mat')
             for split in SPLITS}
    self.set_class_names(class_names(lists))
    return {split: self._generate_examples(files, split, paths)
            for split, paths in lists.items()}

  def _generate_examples(self, files, split, paths):
    for path, data in self.listed_members(files, split, IMAGES.filename, _relative_path, paths,
                                          f'{split}_list.mat'):
      encoded = self.encode_image(split, path, data)
      if encoded is not None:
        yield path, {'image': encoded, 'image/filename': path, 'label': paths[path]}


def _relative_path(member: str) -> str:
  """'Images/n02085620-Chihuahua/n02085620_10074.jpg' -> 'n02085620-Chihuahua/...jpg'."""
  return '/'.join(posixpath.normpath(member).split('/')[-2:])
