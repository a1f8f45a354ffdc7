"""Where a run's metrics go: TensorBoard events and workdir/metrics.jsonl, not the log.

clu's default writer also echoes every scalar dict and image shape into the log; the log has
its own lines for a person (clan_jax/train/progress_log.py), so this writer leaves it alone.

metrics.jsonl holds one JSON object per write of scalars: {"step": N, "time": unix seconds,
<name>: value, ...}, a non-finite value as null. A resumed run appends: a step written before
an interruption and written again after it appears twice, and its later line counts.
"""

import json
import math
import os
import time
from typing import Any, Mapping, Optional

from clu import metric_writers
from clu.metric_writers import interface

METRICS_FILE = 'metrics.jsonl'


def _number(value: Any) -> Optional[float]:
  number = float(value)
  return number if math.isfinite(number) else None


class JsonLinesWriter(interface.MetricWriter):
  """Scalars appended to a JSON-lines file; everything else (images, texts, ...) ignored."""

  def __init__(self, path: str):
    self.path = path

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {'step': int(step), 'time': round(time.time(), 3),
              **{name: _number(value) for name, value in scalars.items()}}
    # Opened per write (a few per log step): each line is complete on disk after its write,
    # whatever happens to the process next.
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    pass

  def close(self):
    pass


def create_metric_writer(workdir: str, is_main_process: bool = True,
                         metrics_file: Optional[str] = METRICS_FILE) -> metric_writers.MultiWriter:
  """The run's writer: TensorBoard events and `metrics_file` (None: none) in `workdir`
  (process 0 only; the other processes' writer writes nothing), asynchronous like clu's
  default writer."""
  if not is_main_process:
    return metric_writers.MultiWriter([])
  writers = [metric_writers.SummaryWriter(workdir)]
  if metrics_file:
    writers.append(JsonLinesWriter(os.path.join(workdir, metrics_file)))
  return metric_writers.AsyncMultiWriter(writers)
