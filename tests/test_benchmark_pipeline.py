"""The pipeline benchmark runs and reports both modes (its figures live in BENCHMARKS.md)."""

import json

from helpers.commands import run_cli


def test_benchmark_reports_encoded_and_cached_throughput(tmp_path):
  path = tmp_path / 'records.json'
  result = run_cli('-m', 'clan_jax.benchmark_pipeline', '--crop_size=64', '--resize_size=72',
                   '--num_images=8', '--batch_size=4', '--batches=2', f'--json={path}')
  records = json.loads(path.read_text())
  assert [r['mode'] for r in records] == ['encoded', 'cache']
  assert all(r['images_per_sec'] > 0 and r['threads'] == 1 for r in records)
  assert 'per thread' in result.stdout
