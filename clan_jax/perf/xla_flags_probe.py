"""--xla_flags_probe (clan_jax/benchmark.py): which XLA flags this jaxlib accepts. An unknown
flag in XLA_FLAGS aborts the process that starts a backend, so each flag is tried alone in
a process of its own: the devices listed and a tiny function compiled and run."""

import os
import subprocess
import sys

PROBE = ('import jax, jax.numpy as jnp\n'
         'jax.devices()\n'
         'jax.jit(lambda x: x + 1)(jnp.ones(8)).block_until_ready()\n'
         'print(jax.__version__, jax.default_backend())\n')
TAIL_CHARS = 600


def probe_flag(flag: str, timeout_s: float = 180) -> dict:
  """{'flag', 'accepted', 'exit_status', 'error_tail'} (and 'jax', 'backend' if accepted)."""
  env = dict(os.environ, XLA_FLAGS=flag,
             XLA_PYTHON_CLIENT_PREALLOCATE='false')  # A probe needs no share of the GPU.
  try:
    done = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    return {'flag': flag, 'accepted': False, 'exit_status': None,
            'error_tail': f'no answer within {timeout_s:g} s'}
  record = {'flag': flag, 'accepted': done.returncode == 0, 'exit_status': done.returncode,
            'error_tail': '' if done.returncode == 0 else done.stderr.strip()[-TAIL_CHARS:]}
  if done.returncode == 0 and done.stdout.split():
    record['jax'], record['backend'] = done.stdout.split()[-2:]
  return record


def format_probe(records: list[dict]) -> str:
  lines = []
  for r in records:
    error = r['error_tail'].strip().splitlines()[-1:] if r['error_tail'] else []
    lines.append(f'{r["flag"]:60} {"accepted" if r["accepted"] else "REFUSED"}'
                 + (f'  ({error[0][-120:]})' if error else ''))
  return '\n'.join(lines)
