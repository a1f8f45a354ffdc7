"""Stanford Cars (Cars196) from the user's four original files (or their extracted folders).

Splits `train` (8,144 images of cars_train.tgz) and `test` (8,041 of cars_test.tgz);
`label` = the annotation's `class` - 1, named from the devkit's cars_meta.mat ('AM General
Hummer SUV 2000', ...), as TFDS's `cars196`. The training annotations are in the devkit
(cars_train_annos.mat); the test labels came later, in cars_test_annos_withlabels.mat (the
devkit's cars_test_annos.mat has none). The box (bbox_x1..bbox_y2, pixels) is kept as
`bbox`, divided by the image size as TFDS does, and clipped to [0, 1].
"""

import posixpath

from clan_jax.datasets.base import ClanBuilder, pixel_bbox
from clan_jax.datasets.sources import OfficialFile, load_mat, mat_field
from clan_jax.base.errors import UserError

# The original host (ai.stanford.edu/~jkrause/cars) is gone (TFDS's cars196 URLs have been
# dead since 2023): users bring the files from a mirror.
_MIRROR = ("a mirror of the original ai.stanford.edu/~jkrause/cars files, which are no "
           "longer served (e.g. Kaggle's 'stanford-car-dataset' re-uploads)")
TRAIN = OfficialFile(
    filename='cars_train.tgz', source=_MIRROR,
    sha256='512b227b30e2f0a8aab9e09485786ab4479582073a144998da74d64b801fd288',
    size=979269282, extracted_dir='cars_train')
TEST = OfficialFile(
    filename='cars_test.tgz', source=_MIRROR,
    sha256='bffea656d6f425cba3c91c6d83336e4c5f86c6cffd8975b0f375d3a10da8e243',
    size=977350468, extracted_dir='cars_test')
DEVKIT = OfficialFile(
    filename='car_devkit.tgz', source=_MIRROR,
    sha256='b97deb463af7d58b6bfaa18b2a4de9829f0f79e8ce663dfa9261bf7810e9accd',
    size=330960, extracted_dir='devkit')
TEST_LABELS = OfficialFile(
    filename='cars_test_annos_withlabels.mat', source=_MIRROR + '; the test labels',
    sha256='790f75be8ea34eeded134cc559332baf23e30e91367e9ddca97d26ed9b895f05',
    size=185758)


def parse_annotations(data: bytes, name: str) -> dict[str, tuple[int, tuple[float, ...]]]:
  """The `annotations` struct -> {fname: (label, (x1, y1, x2, y2))}."""
  records = mat_field(load_mat(data, name), 'annotations', name)
  if 'class' not in (records.dtype.names or ()):
    raise UserError(f'{name}: its annotations have no class field (the unlabelled '
                    'cars_test_annos.mat?); the test labels are in '
                    'cars_test_annos_withlabels.mat.')
  return {str(r['fname']): (int(r['class']) - 1,
                            tuple(float(r[k]) for k in ('bbox_x1', 'bbox_y1', 'bbox_x2',
                                                        'bbox_y2')))
          for r in records}


class ClanCars(ClanBuilder):
  """Stanford Cars, 196 classes (make, model, year)."""

  TITLE = 'Stanford Cars'
  OFFICIAL_FILES = (TRAIN, TEST, DEVKIT, TEST_LABELS)
  HAS_BBOX = True
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Place {TRAIN.filename}, {TEST.filename}, {DEVKIT.filename} and '
      f'{TEST_LABELS.filename} from {_MIRROR} in manual_dir.')

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded: the files come from manual_dir.
    files = self.dataset_files()
    devkit = files.read_members(DEVKIT.filename, ('cars_meta.mat', 'cars_train_annos.mat'))
    meta = load_mat(devkit['cars_meta.mat'], 'devkit/cars_meta.mat')
    self.set_class_names([str(n) for n in mat_field(meta, 'class_names',
                                                    'devkit/cars_meta.mat')])
    with open(files.paths[TEST_LABELS.filename], 'rb') as f:
      test_annotations = parse_annotations(f.read(), TEST_LABELS.filename)
    annotations = {
        'train': (TRAIN, 'devkit/cars_train_annos.mat',
                  parse_annotations(devkit['cars_train_annos.mat'],
                                    'devkit/cars_train_annos.mat')),
        'test': (TEST, TEST_LABELS.filename, test_annotations),
    }
    return {split: self._generate_examples(files, split, *args)
            for split, args in annotations.items()}

  def _generate_examples(self, files, split, archive, listed_in, annotations):
    # Matched by file name, wherever it sits: some re-uploads nest the folder twice.
    name_of = lambda fname: f'{archive.extracted_dir}/{fname}'
    for fname, data in self.listed_members(files, split, archive.filename, posixpath.basename,
                                           annotations, listed_in, name_of):
      encoded = self.encode_image(split, name_of(fname), data)
      if encoded is None:
        continue
      label, box = annotations[fname]
      yield name_of(fname), {'image': encoded, 'image/filename': name_of(fname),
                             'label': label, 'bbox': pixel_bbox(encoded, *box)}
