"""Users' own images: `root/<split>/<class>/<image>`, class names sorted.

Every sub-folder of root is a split (e.g. train, test); the classes are the union of the
class folders of all splits, sorted, so labels agree across splits. The built dataset is
named after root and a fingerprint of its listing (names, sizes, modification times): a
changed folder is built anew, an unchanged one is reused.
"""

import hashlib
import os

import tensorflow_datasets as tfds

from clan_jax.datasets.base import ClanBuilder
from clan_jax.base.errors import UserError


def list_images(root: str) -> dict[str, dict[str, list[str]]]:
  """{split: {class: [file, ...]}} of root, sorted; hidden files ignored."""
  if not root or not os.path.isdir(root):
    raise UserError(f"dataset.root={root!r} is not a folder; expected root/<split>/<class>/"
                    '<image>, e.g. root/train/cardinal/001.jpg and root/test/cardinal/002.jpg.')
  listing = {}
  for split in sorted(os.listdir(root)):
    split_dir = os.path.join(root, split)
    if split.startswith('.') or not os.path.isdir(split_dir):
      continue
    classes = {}
    for name in sorted(os.listdir(split_dir)):
      class_dir = os.path.join(split_dir, name)
      if not name.startswith('.') and os.path.isdir(class_dir):
        classes[name] = sorted(f for f in os.listdir(class_dir) if not f.startswith('.')
                               and os.path.isfile(os.path.join(class_dir, f)))
    listing[split] = classes
  if not any(files for classes in listing.values() for files in classes.values()):
    raise UserError(f'{root} holds no images in the layout root/<split>/<class>/<image>.')
  return listing


def folder_config(root: str) -> tfds.core.BuilderConfig:
  """A config named after root and the fingerprint of its listing."""
  root = os.path.abspath(root)
  digest = hashlib.sha256(root.encode())
  for split, classes in list_images(root).items():
    for name, files in classes.items():
      for f in files:
        stat = os.stat(os.path.join(root, split, name, f))
        digest.update(f'{split}/{name}/{f}:{stat.st_size}:{stat.st_mtime_ns}\n'.encode())
  slug = ''.join(c if c.isalnum() else '_' for c in os.path.basename(root))[:40] or 'root'
  return tfds.core.BuilderConfig(name=f'{slug}_{digest.hexdigest()[:12]}', description=root)


class ClanFolder(ClanBuilder):
  """Images in root/<split>/<class>/<image>."""

  TITLE = 'image folder'

  def __init__(self, *, root: str = '', **kwargs):
    self.root = os.path.abspath(root) if root else ''
    if root and 'config' not in kwargs:
      kwargs['config'] = folder_config(root)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    listing = list_images(self.root)
    names = sorted({name for classes in listing.values() for name in classes})
    self.set_class_names(names)
    labels = {name: index for index, name in enumerate(names)}
    return {split: self._generate_examples(split, classes, labels)
            for split, classes in listing.items()}

  def _generate_examples(self, split, classes, labels):
    for name, files in classes.items():
      for f in files:
        relative = f'{name}/{f}'
        with open(os.path.join(self.root, split, name, f), 'rb') as handle:
          encoded = self.encode_image(split, relative, handle.read())
        if encoded is not None:
          yield relative, {'image': encoded, 'image/filename': relative,
                           'label': labels[name]}
