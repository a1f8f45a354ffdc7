"""scripts/gpu_benchmark.sh, the one call a lent GPU gets: every phase passes flags that the
benchmark accepts (checked here without a GPU: a stand-in python records the calls)."""

import os
import re
import subprocess

from clan_jax import benchmark
from helpers.commands import REPO_ROOT

SCRIPT = REPO_ROOT / 'scripts' / 'gpu_benchmark.sh'


def _phases() -> list[str]:
  return re.findall(r'^    (\w+)\)', SCRIPT.read_text(), flags=re.MULTILINE)


def test_every_phase_calls_the_benchmark_with_valid_flags(tmp_path):
  phases = _phases()
  assert len(phases) >= 10 and 'jax_profile' in phases and 'clan_train' in phases
  calls = tmp_path / 'calls.txt'
  stand_in = tmp_path / 'python'
  stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\n')
  stand_in.chmod(0o755)
  out = tmp_path / 'out'
  env = {**os.environ, 'PYTHON': str(stand_in), 'OUT': str(out), 'PARITY': '0',
         'PHASES': ' '.join(phases)}
  subprocess.run(['bash', str(SCRIPT)], env=env, check=True, capture_output=True, timeout=60)
  assert 'unknown phase' not in (out / 'log.txt').read_text()
  runs = [line.split()[2:] for line in calls.read_text().splitlines()
          if line.startswith('-m clan_jax.benchmark ')]
  assert len(runs) >= len(phases)  # Some phases run the benchmark twice.
  for args in runs:
    try:
      benchmark.FLAGS(['benchmark', *args])
      benchmark._check_flags()  # pylint: disable=protected-access
      assert benchmark.FLAGS.json.startswith(str(out)) and benchmark.FLAGS.dtype == 'bfloat16'
    finally:
      benchmark.FLAGS.unparse_flags()


def test_an_unknown_phase_is_logged_and_the_others_still_run(tmp_path):
  env = {**os.environ, 'PYTHON': 'true', 'OUT': str(tmp_path), 'PARITY': '0',
         'PHASES': 'no_such_phase jax_clca_folded'}
  subprocess.run(['bash', str(SCRIPT)], env=env, check=True, capture_output=True, timeout=60)
  log = (tmp_path / 'log.txt').read_text()
  assert 'unknown phase no_such_phase' in log and '=== jax_clca_folded' in log
