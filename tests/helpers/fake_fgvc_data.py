"""Tiny fake Stanford Cars, FGVC-Aircraft and Stanford Dogs in their official layouts.

Each holds the bad files real datasets hold (grayscale and CMYK JPEGs, PNGs named .jpg, a
corrupt or truncated file); the .mat annotation files are written with scipy, with the
variables, struct fields and cell arrays of the originals.
"""

import io
import os
import tarfile

import numpy as np
import scipy.io

from helpers.fake_data import encode, photo


def image_bytes(seed: int, height: int, width: int, kind: str) -> bytes:
  """Like fake_data.encode, plus 'truncated': a JPEG cut short (its header still reads)."""
  if kind == 'truncated':
    data = encode(photo(seed, height, width), 'jpeg')
    return data[:len(data) // 2]
  return encode(photo(seed, height, width), kind, seed)


def write_tar(path: str, members, mode: str = 'w:gz') -> str:
  """A tar of (name, bytes) members, in the given order."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tarfile.open(path, mode) as archive:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  return path


def mat_bytes(variables: dict) -> bytes:
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, variables)
  return buffer.getvalue()


def cell(strings, shape) -> np.ndarray:
  """A MATLAB cell array of strings."""
  array = np.empty(len(strings), dtype=object)
  array[:] = [np.array([s]) for s in strings]
  return array.reshape(shape)


# ----------------------------------------------------------------------- Stanford Cars

CARS_CLASSES = ('AM General Hummer SUV 2000', 'Ram C/V Cargo Van Minivan 2012',
                'smart fortwo Convertible 2012')
# split -> [(fname, class index, kind, (height, width), (x1, y1, x2, y2))]
CARS_IMAGES = {
    'train': [
        ('00001.jpg', 0, 'jpeg', (48, 64), (3, 4, 60, 40)),
        ('00002.jpg', 1, 'gray_jpeg', (50, 70), (1, 1, 70, 50)),
        ('00003.jpg', 2, 'png', (44, 60), (10, 5, 30, 25)),
        ('00004.jpg', 0, 'cmyk_jpeg', (52, 66), (2, 2, 60, 50)),
        ('00005.jpg', 1, 'truncated', (56, 72), (2, 2, 60, 50)),
        ('00006.jpg', 2, 'jpeg', (40, 58), (0, 0, 58, 40)),
    ],
    'test': [
        ('00001.jpg', 2, 'jpeg', (46, 62), (5, 6, 50, 40)),
        ('00002.jpg', 0, 'rgba_png', (54, 68), (3, 3, 66, 52)),
        ('00003.jpg', 1, 'jpeg', (42, 64), (7, 8, 63, 41)),
        ('00004.jpg', 1, 'palette_png', (48, 48), (1, 2, 47, 46)),
    ],
}
CARS_CORRUPT = 'cars_train/00005.jpg'


def cars_seed(split: str, index: int) -> int:
  return (100 if split == 'train' else 200) + index


def cars_annotations(split: str, with_class: bool = True) -> bytes:
  """An `annotations` 1xN struct with the original fields, in the original order."""
  fields = ['bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2'] + (['class'] if with_class else [])
  records = np.zeros((1, len(CARS_IMAGES[split])),
                     dtype=[(f, object) for f in fields + ['fname']])
  for i, (fname, cls, _, _, box) in enumerate(CARS_IMAGES[split]):
    values = [np.array([[v]], np.uint16) for v in box]
    values += [np.array([[cls + 1]], np.uint8)] if with_class else []
    records[0, i] = tuple(values) + (np.array([fname]),)
  return mat_bytes({'annotations': records})


def write_cars(manual_dir: str) -> None:
  """cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat."""
  for split in ('train', 'test'):
    members = [(f'cars_{split}/{fname}', image_bytes(cars_seed(split, i), *size, kind))
               for i, (fname, _, kind, size, _) in enumerate(CARS_IMAGES[split])]
    write_tar(os.path.join(manual_dir, f'cars_{split}.tgz'), members)
  write_tar(os.path.join(manual_dir, 'car_devkit.tgz'), [
      ('devkit/README.txt', b'fake Stanford Cars devkit\n'),
      ('devkit/cars_meta.mat', mat_bytes({'class_names': cell(CARS_CLASSES, (1, -1))})),
      ('devkit/cars_test_annos.mat', cars_annotations('test', with_class=False)),
      ('devkit/cars_train_annos.mat', cars_annotations('train')),
      ('devkit/eval_train.m', b'% fake\n'),
      ('devkit/train_perfect_preds.txt', b'1\n'),
  ])
  with open(os.path.join(manual_dir, 'cars_test_annos_withlabels.mat'), 'wb') as f:
    f.write(cars_annotations('test'))


# ----------------------------------------------------------------------- FGVC-Aircraft

# variants.txt's order on purpose not sorted: labels follow the file.
AIRCRAFT_VARIANTS = {  # variant -> (family, manufacturer)
    '737-300': ('Boeing 737', 'Boeing'),
    '737-200': ('Boeing 737', 'Boeing'),
    'A300B4': ('A300', 'Airbus'),
    'DC-10': ('DC-10', 'McDonnell Douglas'),
    'F/A-18': ('F/A-18', 'McDonnell Douglas'),
    'Cessna 172': ('Cessna 172', 'Cessna'),
}
AIRCRAFT_FAMILIES = ('A300', 'Boeing 737', 'Cessna 172', 'DC-10', 'F/A-18')
AIRCRAFT_MANUFACTURERS = ('Airbus', 'Boeing', 'Cessna', 'McDonnell Douglas')
# id -> (variant, split, kind, (height, width)); in trainval, odd positions are 'val'.
AIRCRAFT_IMAGES = {
    '0034309': ('737-300', 'trainval', 'jpeg', (64, 80)),
    '0034958': ('737-200', 'trainval', 'gray_jpeg', (60, 84)),
    '0037511': ('A300B4', 'trainval', 'cmyk_jpeg', (66, 78)),
    '0037512': ('DC-10', 'trainval', 'png', (58, 90)),
    '0041220': ('F/A-18', 'trainval', 'jpeg', (70, 76)),
    '0043051': ('Cessna 172', 'trainval', 'corrupt', (64, 80)),
    '0045111': ('Cessna 172', 'trainval', 'jpeg', (15, 60)),  # No room for the banner.
    '0056978': ('737-300', 'test', 'jpeg', (62, 82)),
    '0062011': ('A300B4', 'test', 'rgba_png', (60, 80)),
    '0062012': ('F/A-18', 'test', 'jpeg', (68, 74)),
    '1025794': ('Cessna 172', 'test', 'jpeg', (64, 88)),
    '2230180': ('DC-10', 'test', 'jpeg', (64, 80)),
}
AIRCRAFT_CORRUPT = '0043051.jpg'
AIRCRAFT_TOO_SMALL = '0045111.jpg'
AIRCRAFT_UNLISTED = '0999999'  # In the archive, in no list: ignored.


def aircraft_label_name(image_id: str, level: str) -> str:
  variant = AIRCRAFT_IMAGES[image_id][0]
  return {'variant': variant, 'family': AIRCRAFT_VARIANTS[variant][0],
          'manufacturer': AIRCRAFT_VARIANTS[variant][1]}[level]


def aircraft_image(image_id: str) -> bytes:
  """The image, with a dark 20-row copyright banner at the bottom, as the originals have."""
  _, _, kind, (height, width) = AIRCRAFT_IMAGES[image_id]
  pixels = photo(int(image_id) % 1000, height, width)
  pixels[-20:] = 30
  pixels[-14:-6, 4:width // 2] = 230  # The banner's text.
  return encode(pixels, kind, int(image_id) % 1000)


def aircraft_box(image_id: str) -> tuple[int, int, int, int]:
  """xmin ymin xmax ymax; the box reaches into the banner (clipped once it is cropped)."""
  _, _, _, (height, width) = AIRCRAFT_IMAGES[image_id]
  return (3, 2, width - 5, height - 8)


def _aircraft_lists(level: str) -> list[tuple[str, bytes]]:
  lines = {'train': [], 'val': [], 'trainval': [], 'test': []}
  for k, (image_id, (_, split, _, _)) in enumerate(AIRCRAFT_IMAGES.items()):
    line = f'{image_id} {aircraft_label_name(image_id, level)}\n'
    lines[split].append(line)
    if split == 'trainval':
      lines['val' if k % 2 else 'train'].append(line)
  return [(f'images_{level}_{split}.txt', ''.join(rows).encode())
          for split, rows in lines.items()]


def write_aircraft(manual_dir: str) -> str:
  """fgvc-aircraft-2013b.tar.gz in the official layout (images first, lists after)."""
  root = 'fgvc-aircraft-2013b'
  members = [(f'{root}/data/images/{i}.jpg', aircraft_image(i)) for i in AIRCRAFT_IMAGES]
  members.append((f'{root}/data/images/{AIRCRAFT_UNLISTED}.jpg',
                  encode(photo(5, 40, 40), 'jpeg')))
  data = [('variants.txt', ''.join(f'{v}\n' for v in AIRCRAFT_VARIANTS).encode()),
          ('families.txt', ''.join(f'{f}\n' for f in AIRCRAFT_FAMILIES).encode()),
          ('manufacturers.txt', ''.join(f'{m}\n' for m in AIRCRAFT_MANUFACTURERS).encode()),
          ('images_box.txt', ''.join(f'{i} {" ".join(map(str, aircraft_box(i)))}\n'
                                     for i in AIRCRAFT_IMAGES).encode())]
  for level in ('variant', 'family', 'manufacturer'):
    data += _aircraft_lists(level)
  members += [(f'{root}/data/{name}', content) for name, content in data]
  members.append((f'{root}/README.md', b'fake FGVC-Aircraft 2013b\n'))
  return write_tar(os.path.join(manual_dir, 'fgvc-aircraft-2013b.tar.gz'), members)


# ----------------------------------------------------------------------- Stanford Dogs

DOGS_CLASSES = ('n02085620-Chihuahua', 'n02085782-Japanese_spaniel',
                'n02116738-African_hunting_dog')
# 'folder/file.jpg' -> (class index, split, kind, (height, width))
DOGS_IMAGES = {
    'n02085620-Chihuahua/n02085620_10074.jpg': (0, 'train', 'jpeg', (50, 60)),
    'n02085620-Chihuahua/n02085620_10131.jpg': (0, 'train', 'gray_jpeg', (52, 64)),
    'n02085620-Chihuahua/n02085620_10621.jpg': (0, 'test', 'jpeg', (48, 66)),
    'n02085782-Japanese_spaniel/n02085782_1039.jpg': (1, 'train', 'cmyk_jpeg', (54, 62)),
    'n02085782-Japanese_spaniel/n02085782_1058.jpg': (1, 'train', 'corrupt', (50, 60)),
    'n02085782-Japanese_spaniel/n02085782_1059.jpg': (1, 'test', 'png', (46, 70)),
    'n02116738-African_hunting_dog/n02116738_10024.jpg': (2, 'train', 'jpeg', (58, 60)),
    'n02116738-African_hunting_dog/n02116738_10038.jpg': (2, 'test', 'rgba_png', (50, 50)),
    'n02116738-African_hunting_dog/n02116738_10081.jpg': (2, 'test', 'jpeg', (44, 68)),
}
DOGS_CORRUPT = 'n02085782-Japanese_spaniel/n02085782_1058.jpg'
DOGS_NOT_IN_ARCHIVE = 'n02116738-African_hunting_dog/n02116738_10081.jpg'


def dogs_image(path: str) -> bytes:
  _, _, kind, size = DOGS_IMAGES[path]
  return image_bytes(sum(path.encode()) % 997, *size, kind)


def _dogs_list(split: str) -> bytes:
  paths = [p for p, (_, s, _, _) in DOGS_IMAGES.items() if split in ('all', s)]
  return mat_bytes({
      'file_list': cell(paths, (-1, 1)),
      'annotation_list': cell([p[:-len('.jpg')] for p in paths], (-1, 1)),
      'labels': np.array([[DOGS_IMAGES[p][0] + 1] for p in paths], np.float64),
  })


def _dogs_annotation(path: str) -> bytes:
  """A PASCAL VOC-style XML of one box (annotation.tar; optional for our builder)."""
  _, _, _, (height, width) = DOGS_IMAGES[path]
  return (f'<annotation><filename>{path.split("/")[1][:-4]}</filename><size><width>{width}'
          f'</width><height>{height}</height><depth>3</depth></size><object><name>dog</name>'
          f'<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>{width - 4}</xmax><ymax>{height - 5}'
          '</ymax></bndbox></object></annotation>').encode()


def write_dogs(manual_dir: str, annotations: bool = True) -> None:
  """images.tar and lists.tar (and annotation.tar) in the official layouts."""
  write_tar(os.path.join(manual_dir, 'images.tar'),
            [(f'Images/{p}', dogs_image(p)) for p in DOGS_IMAGES if p != DOGS_NOT_IN_ARCHIVE],
            mode='w')
  write_tar(os.path.join(manual_dir, 'lists.tar'),
            [(f'{s}_list.mat' if s != 'all' else 'file_list.mat', _dogs_list(s))
             for s in ('all', 'train', 'test')], mode='w')
  if annotations:
    write_tar(os.path.join(manual_dir, 'annotation.tar'),
              [(f'Annotation/{p[:-4]}', _dogs_annotation(p)) for p in DOGS_IMAGES], mode='w')
