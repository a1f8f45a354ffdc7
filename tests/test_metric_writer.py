"""The run's metric writer: TensorBoard events and metrics.jsonl, nothing in the log."""

import json
import logging
import os

import numpy as np

from clan_jax.train.metric_writer import METRICS_FILE, JsonLinesWriter, create_metric_writer


def read_lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_scalars_go_to_tensorboard_and_metrics_jsonl_without_a_log_line(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  writer = create_metric_writer(str(tmp_path))
  writer.write_scalars(4, {'train_loss': np.float32(1.5), 'steps_per_sec': 2.0})
  writer.write_images(4, {'attention/image_0': np.zeros((8, 8, 3), np.uint8)})
  writer.write_scalars(8, {'eval_top1_fused': 0.75, 'train_loss': float('nan')})
  writer.flush()
  records = read_lines(tmp_path / METRICS_FILE)
  assert [r['step'] for r in records] == [4, 8]
  assert records[0]['train_loss'] == 1.5 and records[0]['steps_per_sec'] == 2.0
  assert records[1] == {'step': 8, 'time': records[1]['time'], 'eval_top1_fused': 0.75,
                        'train_loss': None}
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  assert not [r for r in caplog.records if 'Got images' in r.getMessage()
              or 'train_loss' in r.getMessage()]


def test_a_resumed_run_appends(tmp_path):
  path = tmp_path / METRICS_FILE
  JsonLinesWriter(str(path)).write_scalars(4, {'train_loss': 1.0})
  JsonLinesWriter(str(path)).write_scalars(4, {'train_loss': 0.5})
  assert [r['train_loss'] for r in read_lines(path)] == [1.0, 0.5]


def test_other_processes_write_nothing(tmp_path):
  writer = create_metric_writer(str(tmp_path), is_main_process=False)
  writer.write_scalars(1, {'train_loss': 1.0})
  writer.flush()
  assert os.listdir(tmp_path) == []
