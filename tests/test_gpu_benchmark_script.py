"""scripts/gpu_benchmark.sh and scripts/gpu_speed.sh, the calls a lent GPU gets: every phase
passes flags that the benchmark accepts (checked here without a GPU: a stand-in python records
the calls)."""

import os
import re
import subprocess

from clan_jax import benchmark
from clan_jax.perf import variants
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


SPEED_SCRIPT = REPO_ROOT / 'scripts' / 'gpu_speed.sh'
NEW_FORMS = re.search(r'^NEW="(.*)"$', SPEED_SCRIPT.read_text(), re.MULTILINE).group(1)
FLAGS_TRIED = re.search(r'^FLAGS_TO_TRY=\((.*)\)$', SPEED_SCRIPT.read_text(),
                        re.MULTILINE).group(1).split()


def _speed_script_calls(tmp_path, budget_s: int) -> tuple[list[list[str]], str]:
  """The benchmark calls scripts/gpu_speed.sh makes with a stand-in python, and its log."""
  calls = tmp_path / 'calls.txt'
  stand_in = tmp_path / 'python'
  stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\n')
  stand_in.chmod(0o755)
  out = tmp_path / 'out'
  env = {**os.environ, 'PYTHON': str(stand_in), 'OUT': str(out), 'CACHE': str(tmp_path / 'c'),
         'BUDGET_S': str(budget_s)}
  subprocess.run(['bash', str(SPEED_SCRIPT)], env=env, check=True, capture_output=True,
                 timeout=60)
  runs = [line.split()[2:] for line in calls.read_text().splitlines()
          if line.startswith('-m clan_jax.benchmark ')]
  return runs, (out / 'log.txt').read_text()


def test_the_speed_script_passes_valid_flags_in_its_order_of_importance(tmp_path):
  runs, log = _speed_script_calls(tmp_path, budget_s=530)
  # The flag probe first, then today's step against the new forms together, each alone,
  # the ceilings, the profile, batch 128 (remat too) and torch.compile (not an H100).
  assert [next((a for a in args if a.startswith(('--variants', '--ceilings', '--xla_flags',
                                                 '--frameworks'))), '') for args in runs][:6] == [
      f'--xla_flags_probe={",".join(FLAGS_TRIED)}', f'--variants={NEW_FORMS}',
      '--variants=bn_impl=custom_vjp', '--ceilings', f'--variants={NEW_FORMS}',
      f'--variants={NEW_FORMS}']
  assert '--frameworks=torch' in runs[-1] and '=== done' in log
  # Remat at batch 128 with the downsample as a strided convolution (the form meant to compile).
  assert [a for a in runs[5] if 'remat=True' in a] == [f'--variants={NEW_FORMS};remat=True']
  assert 'downsample_impl=conv' in NEW_FORMS
  assert '--peak_gbps=3350' in runs[4]  # The profile's bandwidth: an H100's unless an H200.
  for args in runs:
    try:
      benchmark.FLAGS(['benchmark', *args])
      benchmark._check_flags()  # pylint: disable=protected-access
      if not benchmark.FLAGS.xla_flags_probe:
        assert benchmark.FLAGS.dtype == 'bfloat16' and benchmark.FLAGS.image_size == 448
      for spec in benchmark.FLAGS.variants:  # Every variant names fields that exist.
        variants.parse_spec(spec)
    finally:
      benchmark.FLAGS.unparse_flags()


def test_the_speed_script_skips_phases_the_budget_cannot_hold(tmp_path):
  runs, log = _speed_script_calls(tmp_path, budget_s=50)
  for phase in ('variants', 'variants_alone', 'profile', 'batch', 'torch_compile'):
    assert f'=== {phase}: skipped' in log
  assert re.search(r'=== ceilings \(limit 4\ds', log) and runs[-1][0] == '--depth=50'
