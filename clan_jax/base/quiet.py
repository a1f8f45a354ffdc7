"""The commands' own output, not the libraries': their routine log lines dropped, TensorFlow's
C++ banners (oneDNN, cpu_feature_guard) and TFDS's progress bars and status lines off unless
--verbose."""

import contextlib
import io
import logging
import os
from typing import Iterator

from absl import logging as absl_logging


def quiet_tensorflow() -> None:
  """Hides TensorFlow's C++ INFO and WARNING lines; it reads TF_CPP_MIN_LOG_LEVEL only once,
  when it is imported, so call this before anything imports TensorFlow. A value the user set
  is kept."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def quiet_tfds() -> None:
  """Turns off TFDS's tqdm progress bars (they leave '[A' escapes in a log)."""
  import tensorflow_datasets as tfds  # Late: heavy, and the base room stays light.

  tfds.disable_progress_bar()


@contextlib.contextmanager
def tfds_status_lines_hidden() -> Iterator[None]:
  """Drops what TFDS prints on stdout while building ('Downloading and preparing dataset
  ...', '... Subsequent calls will reuse this data.'): the caller prints its own summary."""
  with contextlib.redirect_stdout(io.StringIO()):
    yield


class _QuietLibraries:
  """Drops the libraries' routine INFO lines (Orbax logs ~40 per checkpoint), TFDS's warning
  that our own builder configs are 'custom', Orbax's that a checkpoint taken between
  evaluations has no metrics, those on the read-only manager that prediction opens on
  purpose and TFDS's that a dataset not yet built has no dataset_info.json; other warnings
  and errors stay."""

  NOISY_PATHS = ('/orbax/', '/tensorflow_datasets/', '/tensorstore/', 'xla_bridge.py')

  def filter(self, record) -> bool:
    path = record.pathname.replace('\\', '/')
    if record.levelno < logging.WARNING and any(p in path for p in self.NOISY_PATHS):
      return False
    message = str(record.msg)
    return not message.startswith(('Using custom data configuration',
                                   'Requested `tracked_metric`',
                                   'CheckpointManagerOptions.read_only=True',
                                   'Given directory is read only',
                                   'Variant folder %s has no '))  # TFDS: a dataset not built yet.


def quiet_library_logs() -> None:
  """Keeps the log readable: our progress, ETA and metrics, not the libraries' internals."""
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
