"""The commands' own output, not the libraries': TensorFlow's C++ banners (oneDNN,
cpu_feature_guard) and TFDS's progress bars and status lines stay off unless --verbose."""

import contextlib
import io
import os
from typing import Iterator


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
