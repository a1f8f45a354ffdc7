"""Paths and command runs: the repository root, `python ARGS` from it, a CPU environment."""

import os
import pathlib
import subprocess
import sys

TESTS_DIR = pathlib.Path(__file__).parent.parent
REPO_ROOT = TESTS_DIR.parent


def run_cli(*args: str, check_returncode: int | None = 0):
  """Runs `python ARGS` from the repository root; returns the CompletedProcess."""
  result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
  if check_returncode is not None:
    assert result.returncode == check_returncode, (
        f'exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}')
  return result


def cli_environment(base: pathlib.Path) -> dict:
  """Subprocess environment: CPU, this checkout first, a compilation cache in base/jax_cache
  shared by the runs that use the same base."""
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(REPO_ROOT),
          'JAX_COMPILATION_CACHE_DIR': str(base / 'jax_cache'),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1'}
