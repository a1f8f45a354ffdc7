"""Reading the user's original dataset files: archives or extracted folders, checksums.

Builders read their files through `DatasetFiles`, which finds them in `manual_dir` (an
official archive, or the folder it extracts to), names every missing file with where to
get it, and checks archives against the official SHA-256 (a mismatch is a warning:
re-packed archives exist; an error only when checksums are verified).
"""

import dataclasses
import hashlib
import io
import os
import tarfile
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from clan_jax.base.errors import UserError


class MissingFilesError(UserError):
  """The files a dataset is built from are not in manual_dir."""


class ChecksumError(UserError):
  """An archive differs from the official one and checksums are verified."""


@dataclasses.dataclass(frozen=True)
class OfficialFile:
  """One original file of a dataset: its name, where to get it, its official checksum."""
  filename: str
  source: str  # Where users get it (a page or a URL), shown when it is missing.
  sha256: str = ''  # '' when unknown; then no check.
  size: int = 0
  extracted_dir: str = ''  # The folder the archive extracts to, accepted instead of it.
  required: bool = True


def missing_files_message(title: str, manual_dir: str, files: Sequence[OfficialFile],
                          missing: Sequence[OfficialFile]) -> str:
  lines = [f'{title}: the original files are not in manual_dir={manual_dir or "(not set)"}.',
           'Expected there:']
  for f in files:
    status = 'MISSING' if f in missing else 'found'
    alternative = f' (or the extracted folder {f.extracted_dir}/)' if f.extracted_dir else ''
    optional = '' if f.required else ', optional'
    lines.append(f'  {f.filename}{alternative}: {status}{optional}; from {f.source}')
  lines.append('Put them in one folder DIR and pass it: --config.dataset.manual_dir=DIR '
               '(main.py) or --manual_dir=DIR (python -m clan_jax.datasets.prepare).')
  return '\n'.join(lines)


def sha256_of(path: str, chunk_size: int = 1 << 22) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(chunk_size):
      digest.update(chunk)
  return digest.hexdigest()


class DatasetFiles:
  """The located original files of one dataset in manual_dir."""

  def __init__(self, title: str, manual_dir: str, files: Sequence[OfficialFile]):
    self.title, self.manual_dir, self.files = title, manual_dir, tuple(files)
    self.paths: dict[str, str] = {}
    missing = []
    for f in self.files:
      path = self._locate(f)
      if path:
        self.paths[f.filename] = path
      elif f.required:
        missing.append(f)
    if missing:
      raise MissingFilesError(missing_files_message(title, manual_dir, self.files, missing))

  def _locate(self, f: OfficialFile) -> Optional[str]:
    if not self.manual_dir:
      return None
    for name in (f.filename, f.extracted_dir):
      path = os.path.join(self.manual_dir, name) if name else ''
      if path and os.path.exists(path):
        return path
    return None

  def checksum_warnings(self, verify: bool = False) -> list[str]:
    """Compares each archive found with the official checksum; raises if `verify`."""
    warnings = []
    for f in self.files:
      path = self.paths.get(f.filename)
      if not path or not f.sha256:
        continue
      if os.path.isdir(path):
        warnings.append(f'{f.filename}: read from the extracted folder {path}; its checksum '
                        'cannot be compared with the official archive.')
        continue
      digest = sha256_of(path)
      if digest != f.sha256:
        warnings.append(f'{f.filename}: SHA-256 {digest} differs from the official {f.sha256} '
                        '(a re-packed or different archive).')
    if verify and warnings:
      raise ChecksumError('checksum verification failed:\n  ' + '\n  '.join(warnings))
    return warnings

  def iter_members(self, filename: str, wanted: Callable[[str], bool]
                   ) -> Iterator[tuple[str, bytes]]:
    """(name inside the archive, bytes) of each wanted regular file, in archive order.

    For an extracted folder, names are given as the archive would (the folder's name,
    then the path inside it), in sorted order.
    """
    path = self.paths[filename]
    if os.path.isdir(path):
      yield from _iter_folder(path, wanted)
    else:
      yield from _iter_tar(path, wanted)

  def read_members(self, filename: str, names: Sequence[str]) -> dict[str, bytes]:
    """The named small members (matched by their trailing path), in one pass."""
    found = {}
    wanted = lambda member: any(_matches(member, n) for n in names)
    for member, data in self.iter_members(filename, wanted):
      for name in names:
        if _matches(member, name) and name not in found:
          found[name] = data
      if len(found) == len(names):
        break
    missing = [n for n in names if n not in found]
    if missing:
      raise MissingFilesError(f'{self.title}: {self.paths[filename]} lacks {", ".join(missing)}; '
                              'it is not the expected archive (or it is incomplete).')
    return found


def _matches(member: str, name: str) -> bool:
  return member == name or member.endswith('/' + name)


def _iter_tar(path: str, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
  try:
    with tarfile.open(path, 'r|*') as archive:  # Streaming: gzip is read once, in order.
      for member in archive:
        if member.isfile() and wanted(member.name):
          yield member.name, archive.extractfile(member).read()
  except (tarfile.TarError, EOFError, OSError) as e:
    raise UserError(f'{path}: cannot be read as a tar archive ({e}); the file may be '
                    'truncated: download it again.') from None


def _iter_folder(path: str, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
  base = os.path.basename(os.path.normpath(path))
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      relative = os.path.relpath(os.path.join(root, name), path).replace(os.sep, '/')
      member = f'{base}/{relative}'
      if wanted(member):
        with open(os.path.join(root, name), 'rb') as f:
          yield member, f.read()


def load_mat(data: bytes, name: str) -> dict:
  """A MATLAB file's variables (squeezed: cells of strings become str arrays)."""
  import scipy.io  # Late: slow to load, and only the .mat files of Cars and Dogs need it.
  from scipy.io.matlab import MatReadError  # Late: as scipy.io.

  try:
    return scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)
  except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as e:
    raise UserError(f'{name}: cannot be read as a MATLAB .mat file ({e}); it is not the '
                    'expected file (or it is truncated).') from None


def mat_field(mat: dict, key: str, name: str):
  """mat[key] as a 1-d array, or a UserError naming the file that lacks it."""
  if key not in mat:
    raise UserError(f'{name}: has no variable {key!r}; it is not the expected file.')
  return np.atleast_1d(mat[key])
