"""Small fake datasets in the official layouts, with the bad files real datasets hold."""

import io
import os
import tarfile

import numpy as np
from PIL import Image

CUB_CLASSES = ('001.Black_footed_Albatross', '002.Laysan_Albatross', '003.Sooty_Albatross')
# id -> (class index, file stem, is_train, kind)
CUB_IMAGES = {
    1: (0, 'Black_Footed_Albatross_0001_1', True, 'jpeg'),
    2: (0, 'Black_Footed_Albatross_0002_2', True, 'gray_jpeg'),
    3: (0, 'Black_Footed_Albatross_0003_3', False, 'cmyk_jpeg'),
    4: (0, 'Black_Footed_Albatross_0004_4', False, 'jpeg'),
    5: (1, 'Laysan_Albatross_0001_5', True, 'rgba_png'),
    6: (1, 'Laysan_Albatross_0002_6', True, 'png'),
    7: (1, 'Laysan_Albatross_0003_7', False, 'jpeg'),
    8: (1, 'Laysan_Albatross_0004_8', False, 'corrupt'),
    9: (2, 'Sooty_Albatross_0001_9', True, 'jpeg'),
    10: (2, 'Sooty_Albatross_0002_10', True, 'jpeg'),
    11: (2, 'Sooty_Albatross_0003_11', False, 'jpeg'),
    12: (2, 'Sooty_Albatross_0004_12', False, 'palette_png'),
}
CORRUPT = 'Laysan_Albatross_0004_8.jpg'


def photo(seed: int, height: int = 60, width: int = 80) -> np.ndarray:
  """A smooth random RGB image (JPEG-friendly)."""
  rng = np.random.default_rng(seed)
  rows = np.cumsum(rng.integers(-6, 7, (height, 1, 3)), axis=0)
  cols = np.cumsum(rng.integers(-6, 7, (1, width, 3)), axis=1)
  return np.clip(rows + cols + rng.integers(60, 190, 3), 0, 255).astype(np.uint8)


def encode(image: np.ndarray, kind: str, seed: int = 0) -> bytes:
  """Image bytes of `kind`; every file keeps a .jpg name whatever its format."""
  if kind == 'corrupt':
    return b'\xff\xd8\xff\xe0 this is not a JPEG ' + bytes(range(64))
  pil = Image.fromarray(image)
  fmt, convert = {'jpeg': ('JPEG', 'RGB'), 'gray_jpeg': ('JPEG', 'L'),
                  'cmyk_jpeg': ('JPEG', 'CMYK'), 'png': ('PNG', 'RGB'),
                  'rgba_png': ('PNG', 'RGBA'), 'palette_png': ('PNG', 'P')}[kind]
  pil = pil.convert(convert)
  if kind == 'rgba_png':
    alpha = np.random.default_rng(seed).integers(0, 256, image.shape[:2], dtype=np.uint8)
    pil.putalpha(Image.fromarray(alpha))
  buffer = io.BytesIO()
  pil.save(buffer, format=fmt, quality=90) if fmt == 'JPEG' else pil.save(buffer, format=fmt)
  return buffer.getvalue()


def cub_image_bytes(image_id: int) -> bytes:
  _, _, _, kind = CUB_IMAGES[image_id]
  return encode(photo(image_id, 50 + 5 * image_id, 90 - 2 * image_id), kind, image_id)


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  archive.addfile(info, io.BytesIO(data))


def _table(rows) -> bytes:
  return ''.join(' '.join(str(v) for v in row) + '\n' for row in rows).encode()


def cub_members() -> list[tuple[str, bytes]]:
  """(name, bytes) in the official archive's order: metadata around the images."""
  root = 'CUB_200_2011'
  paths = {i: f'{CUB_CLASSES[c]}/{stem}.jpg' for i, (c, stem, _, _) in CUB_IMAGES.items()}
  boxes = [(i, 3.0 + i, 4.0, 20.5, 15.0 + i) for i in CUB_IMAGES]
  members = [
      (f'{root}/attributes/certainties.txt', b'1 Certain\n'),
      (f'{root}/bounding_boxes.txt', _table(boxes)),
      (f'{root}/classes.txt', _table((i + 1, name) for i, name in enumerate(CUB_CLASSES))),
      (f'{root}/image_class_labels.txt', _table((i, c + 1) for i, (c, *_) in CUB_IMAGES.items())),
  ]
  members += [(f'{root}/images/{paths[i]}', cub_image_bytes(i)) for i in CUB_IMAGES]
  members += [
      (f'{root}/images.txt', _table(paths.items())),
      (f'{root}/README', b'fake CUB-200-2011 for tests\n'),
      (f'{root}/train_test_split.txt',
       _table((i, int(train)) for i, (_, _, train, _) in CUB_IMAGES.items())),
  ]
  return members


def write_cub(manual_dir: str, segmentations: bool = True) -> str:
  """CUB_200_2011.tgz (and segmentations.tgz) in the official layouts; returns the .tgz path."""
  os.makedirs(manual_dir, exist_ok=True)
  path = os.path.join(manual_dir, 'CUB_200_2011.tgz')
  with tarfile.open(path, 'w:gz') as archive:
    for name, data in cub_members():
      _add(archive, name, data)
  if segmentations:
    with tarfile.open(os.path.join(manual_dir, 'segmentations.tgz'), 'w:gz') as archive:
      for i, (c, stem, _, _) in CUB_IMAGES.items():
        mask = Image.fromarray((photo(100 + i, 50 + 5 * i, 90 - 2 * i)[..., 0] > 120)
                               .astype(np.uint8) * 255)
        buffer = io.BytesIO()
        mask.save(buffer, format='PNG')
        _add(archive, f'segmentations/{CUB_CLASSES[c]}/{stem}.png', buffer.getvalue())
  return path


def write_folder(root: str) -> dict[str, dict[str, int]]:
  """root/<split>/<class>/<image> with a corrupt file and a hidden file; returns the counts."""
  counts = {'train': {'wren': 3, 'finch': 2}, 'test': {'finch': 1, 'wren': 1, 'zebra_finch': 1}}
  seed = 0
  for split, classes in counts.items():
    for name, count in classes.items():
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      for k in range(count):
        seed += 1
        kind = ('jpeg', 'png', 'gray_jpeg')[k % 3]
        with open(os.path.join(root, split, name, f'{k}.jpg'), 'wb') as f:
          f.write(encode(photo(seed), kind))
  with open(os.path.join(root, 'train', 'wren', 'broken.jpg'), 'wb') as f:
    f.write(encode(None, 'corrupt'))
  with open(os.path.join(root, 'train', 'wren', '.DS_Store'), 'wb') as f:
    f.write(b'\x00\x01')
  return counts
