"""A training run that fails before its first step leaves its workdir as it found it: what it
wrote there before that step (the run's files, an empty checkpoints/ folder, TensorBoard's
first file) is removed again, and so is the folder if the run created it. Nothing else is
ever removed: no checkpoint, no file that was there before, no file this list does not name."""

import logging
import os
from typing import Callable, Optional

from clan_jax.train import distributed

# What a run writes in its workdir before its first step; a lock file would join them.
START_FILES = ('config.json', 'classes.json', 'run_info.json')
START_FOLDERS = ('checkpoints',)  # Removed only when empty.
START_PREFIXES = ('events.out.tfevents.',)


def _written_before_start(name: str) -> bool:
  return name in START_FILES + START_FOLDERS or name.startswith(START_PREFIXES)


class UnstartedRunCleanup:
  """A context around a training run: an exception out of it before the first step (see
  counting_steps) takes back what the run wrote (process 0 only: it writes the run's files)."""

  def __init__(self, workdir: str):
    # No workdir (set-up then fails at once): nothing to take back, not the current folder.
    self.workdir = os.path.abspath(os.path.expanduser(workdir)) if workdir else ''
    self.started = False
    # The highest folder of the path that does not exist yet: the run creates it and those
    # below it (os.makedirs), and takes them back.
    self.created_root: Optional[str] = None
    folder = self.workdir
    while folder and not os.path.lexists(folder):
      self.created_root = folder
      folder = os.path.dirname(folder)
    self.found = set(_entries(self.workdir)) if not self.created_root else set()

  def counting_steps(self, train_fn: Callable) -> Callable:
    """`train_fn` that marks the run started once its first step is compiled and launched."""
    def step(*args):
      outputs = train_fn(*args)
      self.started = True
      return outputs
    return step

  def __enter__(self) -> 'UnstartedRunCleanup':
    return self

  def __exit__(self, exc_type, exc, traceback) -> bool:
    if exc_type is not None and not self.started and distributed.is_main_process():
      self.take_back()
    return False  # The exception goes on.

  def take_back(self) -> None:
    """Removes what the run wrote before its first step; see the module's docstring."""
    if not self.workdir or not os.path.isdir(self.workdir) or os.path.islink(self.workdir):
      return
    for name in set(_entries(self.workdir)) - self.found:
      if _written_before_start(name):
        _remove(os.path.join(self.workdir, name))
    if self.created_root is None:
      return
    folder = self.workdir
    while True:  # Up to the highest folder the run created, each only if empty.
      if not _remove(folder):
        return
      if folder == self.created_root:
        break
      folder = os.path.dirname(folder)
    logging.info('the run failed before its first step: removed the folder it had created, %s',
                 self.created_root)


def _entries(folder: str) -> list[str]:
  try:
    return os.listdir(folder)
  except OSError:
    return []


def _remove(path: str) -> bool:
  """Removes a file, or a folder if it is empty; whether it is gone."""
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      os.rmdir(path)  # Fails unless empty: never a checkpoint.
    else:
      os.remove(path)
    return True
  except OSError:
    return False
