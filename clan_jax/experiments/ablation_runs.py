"""The ablation's library (the command, which documents the protocol: clan_jax/ablation.py):
the plan of (variant, seed) runs, each a training command in its own workdir; their records,
launching with progress and ETA, and the table."""

import ctypes
import dataclasses
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

from clan_jax.base.cli import EXIT_RESUMABLE
from clan_jax.base.errors import UserError
from clan_jax.base.files import write_json
from clan_jax.base.text import format_duration, plural
from clan_jax.experiments import ablation_table

# The variants: the model fields each sets, always all of them, so that the table says
# exactly what ran whatever the base config holds.
VARIANTS = {
    'clan': {'model.name': 'clan', 'model.use_clca': True, 'model.use_clsa': True},
    'no_clca': {'model.name': 'clan', 'model.use_clca': False, 'model.use_clsa': True},
    'no_clsa': {'model.name': 'clan', 'model.use_clca': True, 'model.use_clsa': False},
    # The multi-level heads and the fusion alone (not in the default list).
    'heads_only': {'model.name': 'clan', 'model.use_clca': False, 'model.use_clsa': False},
    'resnet': {'model.name': 'resnet'},
}
DEFAULT_VARIANTS = ('clan', 'no_clca', 'no_clsa', 'resnet')
# What a seed sets: the initialisation, and the data order and augmentation. Not the data.
SEED_FIELDS = ('seed', 'dataset.shuffle_seed')
CONTROLLED_FIELDS = frozenset(SEED_FIELDS).union(*VARIANTS.values())
RECORD = 'ablation_run.json'
RESULTS = 'eval_results.json'
LOG = 'train.log'


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  variant: str
  seed: int
  workdir: str
  overrides: tuple[str, ...]  # The --config.KEY=VALUE flags, base config's first.
  config_path: str

  @property
  def command(self) -> list[str]:
    # The training command as a module (clan_jax/main.py is what main.py runs).
    return [sys.executable, '-m', 'clan_jax.main', f'--config={self.config_path}',
            f'--workdir={self.workdir}', *self.overrides]

  @property
  def shown_command(self) -> str:
    """The command as a user would type it from the repository root."""
    return ' '.join(['python main.py', *map(shlex.quote, self.command[3:])])


# ----------------------------------------------------------------------------- the plan

def _flag(key: str, value: Any) -> str:
  return f'--config.{key}={value}'


def variant_overrides(variant: str) -> list[str]:
  return [_flag(k, v) for k, v in VARIANTS[variant].items()]


def seed_overrides(seed: int) -> list[str]:
  return [_flag(field, seed) for field in SEED_FIELDS]


def override_key(flag: str) -> str:
  """'--config.model.depth=18' -> 'model.depth' ('--noconfig.x' -> 'x')."""
  return re.sub(r'^-{1,2}(no)?config\.', '', flag.split('=', 1)[0])


def _is_value(token: str) -> bool:
  """Whether a token after '--config.KEY' is its value: not a flag, or a negative number."""
  if not token.startswith('-'):
    return True
  try:
    float(token)
    return True
  except ValueError:
    return False


def user_overrides(argv: Sequence[str]) -> list[str]:
  """The --config.KEY=VALUE flags of a command line, as given (for the runs' commands).

  Refuses the fields that the ablation sets itself.
  """
  found, i = [], 0
  while i < len(argv):
    arg = argv[i]
    if re.match(r'^-{1,2}flagfile', arg):  # absl reads it here; the runs would not get it.
      raise UserError(f'{arg.split("=", 1)[0]} is not passed on to the runs: give the '
                      '--config.KEY=VALUE overrides on the command line.')
    if re.match(r'^-{1,2}(no)?config\.', arg):
      if '=' not in arg and not arg.startswith(('-noconfig', '--noconfig')) and (
          i + 1 < len(argv) and _is_value(argv[i + 1])):
        arg, i = f'{arg}={argv[i + 1]}', i + 1  # The '--config.KEY VALUE' form.
      found.append(arg)
    i += 1
  for flag in found:
    if override_key(flag) in CONTROLLED_FIELDS:
      raise UserError(f'{flag.split("=", 1)[0]} is set by the ablation itself (the variants '
                      'set model.name, use_clca and use_clsa; --seeds sets '
                      f'{", ".join(SEED_FIELDS)}); remove it.')
  return found


def parse_seeds(values: Sequence[str]) -> list[int]:
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    raise UserError(f'--seeds={",".join(values)} is invalid: give non-negative integers, '
                    'e.g. --seeds=0,1,2.') from None
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise UserError(f'--seeds={",".join(values)} is invalid: give distinct non-negative '
                    'integers, e.g. --seeds=0,1,2.')
  return seeds


def parse_variants(values: Sequence[str]) -> list[str]:
  unknown = [v for v in values if v not in VARIANTS]
  if unknown or not values or len(set(values)) != len(values):
    raise UserError(f'--variants={",".join(values)} is invalid: give distinct names among '
                    f'{", ".join(VARIANTS)}.')
  return list(values)


def plan_runs(config_path: str, workdir: str, overrides: Sequence[str],
              variants: Sequence[str], seeds: Sequence[int]) -> list[PlannedRun]:
  """Every (variant, seed) run, seed by seed; the variant's and seed's flags come last."""
  return [PlannedRun(variant, seed, os.path.join(workdir, variant, f'seed{seed}'),
                     (*overrides, *variant_overrides(variant), *seed_overrides(seed)),
                     config_path)
          for seed in seeds for variant in variants]


# ------------------------------------------------------------------------- run records

def _read_json(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check_record(run: PlannedRun) -> Optional[dict]:
  """The run's record, after checking that its workdir holds this run and no other."""
  record = _read_json(os.path.join(run.workdir, RECORD))
  started = os.path.exists(os.path.join(run.workdir, RESULTS)) or os.path.isdir(
      os.path.join(run.workdir, 'checkpoints'))
  if record is None and started:
    raise UserError(f'{run.workdir} holds a run that this ablation did not start (no {RECORD}); '
                    'use another --workdir or remove it.')
  if record is not None and record['overrides'] != list(run.overrides):
    raise UserError(f'{run.workdir} holds a run with other overrides:\n  '
                    f'{" ".join(record["overrides"])}\nnot\n  {" ".join(run.overrides)}\n'
                    'use another --workdir, or the same flags as before.')
  return record


def finished_result(run: PlannedRun) -> Optional[dict]:
  """The run's result for the table, or None if it has not finished."""
  results = _read_json(os.path.join(run.workdir, RESULTS))
  if results is None:
    return None
  record = _read_json(os.path.join(run.workdir, RECORD)) or {}
  return {'seed': run.seed, 'top1': results['fused']['top1'],
          'heads': {h: v['top1'] for h, v in results.get('heads', {}).items()},
          'steps': results['protocol']['step'], 'wall_s': record.get('wall_s'),
          'resumed': record.get('resumed', False), 'workdir': run.workdir,
          'command': run.shown_command}


# ---------------------------------------------------------------------------- launching

def _die_with_parent() -> None:
  """In the child (Linux): SIGTERM when the driver dies, so no orphan trains on alone
  (and a restarted ablation never runs twice in one workdir); main.py then checkpoints."""
  try:
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_DEATHSIG
  except (OSError, AttributeError):
    pass


def launch(command: Sequence[str], log_path: str) -> tuple[int, Optional[str]]:
  """Runs one training, output appended to log_path; SIGTERM and SIGINT are passed on.

  Returns the exit status and the name of the signal that stopped it (or None).
  """
  stopped = []
  with open(log_path, 'a') as log:
    process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                               preexec_fn=_die_with_parent if sys.platform == 'linux' else None)

    def forward(signum, frame):
      del frame
      stopped.append(signal.Signals(signum).name)
      process.send_signal(signum)  # main.py saves a checkpoint, exits 75 at its next step.

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      returncode = process.wait()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
  return returncode, (stopped[0] if stopped else None)


def _log_tail(path: str, lines: int = 20) -> str:
  with open(path, errors='replace') as f:
    return ''.join(f.readlines()[-lines:])


# ----------------------------------------------------------------------------- the loop

def report_progress(message: str) -> None:
  print(f'[ablation] {message}', file=sys.stderr, flush=True)


def _eta(walls: Sequence[float], remaining: int) -> str:
  if not remaining:
    return 'no runs left'
  if not walls:
    return 'ETA after the first run'
  return f'ETA {format_duration(sum(walls) / len(walls) * remaining)} for the rest'


def _start_record(run: PlannedRun) -> dict:
  os.makedirs(run.workdir, exist_ok=True)
  record = {'variant': run.variant, 'seed': run.seed, 'overrides': list(run.overrides),
            'command': run.shown_command, 'wall_s': None,
            # Resumed from a checkpoint: wall_s then covers the last invocation only.
            'resumed': os.path.isdir(os.path.join(run.workdir, 'checkpoints'))}
  write_json(record, os.path.join(run.workdir, RECORD))
  return record


class RunFailed(Exception):
  """A training run exited with an error; `returncode` is its exit status."""

  def __init__(self, message: str, returncode: int):
    super().__init__(message)
    self.returncode = returncode


def execute(runs: Sequence[PlannedRun], launcher: Callable = launch,
            on_result: Callable[[], None] = lambda: None) -> Optional[str]:
  """Runs what has not finished; returns the reason it stopped early, or None when done.

  `on_result` is called after every finished run (the table is rewritten there).
  """
  records = [check_record(run) for run in runs]  # Every conflict before anything runs.
  walls = [r['wall_s'] for r in records if r and r.get('wall_s') is not None]
  this_session = []  # Wall times measured now: the ETA prefers them (same machine load).
  for i, (run, record) in enumerate(zip(runs, records), 1):
    name = f'{i}/{len(runs)} {run.variant} seed {run.seed}'
    result = finished_result(run)
    if result is not None:
      report_progress(f'{name}: finished before (fused top-1 {result["top1"]:.4f}), skipped')
      continue
    log_path = os.path.join(run.workdir, LOG)
    record = _start_record(run)
    report_progress(f'{name}: {"resuming" if record["resumed"] else "training"}, log {log_path} '
              f'({_eta(this_session or walls, len(runs) - i + 1)})')
    start = time.monotonic()
    returncode, signal_name = launcher(run.command, log_path)
    wall = time.monotonic() - start
    result = finished_result(run)
    # Stopped with its checkpoint (main.py's EXIT_RESUMABLE, also when the signal went to the
    # run alone), or by a signal passed on before main.py could catch it.
    if result is None and (signal_name or returncode == EXIT_RESUMABLE):
      return (f'{name} stopped{f" by {signal_name}" if signal_name else ""} before its end; '
              'its checkpoint is kept: run the same command to resume.')
    if result is None:
      raise RunFailed(f'{name} failed with exit status {returncode}: {run.shown_command}\n'
                      f'the last lines of {log_path}:\n{_log_tail(log_path)}', returncode)
    record['wall_s'] = wall
    write_json(record, os.path.join(run.workdir, RECORD))
    this_session.append(wall)
    report_progress(f'{name}: fused top-1 {result["top1"]:.4f} after {plural(result["steps"], "step")} in '
              f'{format_duration(wall)} ({_eta(this_session, len(runs) - i)})')
    on_result()
    if signal_name:  # It came as the run ended: the run counts, the ablation stops.
      return f'stopped by {signal_name} after {name}: run the same command to go on.'
  return None


# ----------------------------------------------------------------------------- the table

def _machine() -> str:
  model = ''
  try:
    with open('/proc/cpuinfo') as f:
      model = next((line.split(':', 1)[1].strip() for line in f
                    if line.startswith('model name')), '')
  except OSError:
    pass
  return f'{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs' + (
      f' ({model})' if model else '')


def table_rows(runs: Sequence[PlannedRun], variants: Sequence[str]) -> list[dict]:
  rows = []
  for variant in variants:
    mine = [run for run in runs if run.variant == variant]
    results = [r for r in map(finished_result, mine) if r is not None]
    rows.append(ablation_table.summarize(variant, variant_overrides(variant), results,
                                         len(mine)))
  ablation_table.add_paired_differences(rows)
  return rows


def write_table(workdir: str, runs: Sequence[PlannedRun], variants: Sequence[str],
                meta: dict) -> str:
  """Writes workdir/ablation.md and ablation.json; returns the Markdown."""
  rows = table_rows(runs, variants)
  walls = [r['wall_s'] for row in rows for r in row['runs'] if r['wall_s'] is not None]
  meta = {**meta, 'date': time.strftime('%Y-%m-%d %H:%M %Z'), 'machine': _machine(),
          'total_wall_s': sum(walls) if walls else None}
  markdown = ablation_table.render_markdown(rows, meta)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'ablation.md'), 'w') as f:
    f.write(markdown)
  write_json({**meta, 'variants': rows}, os.path.join(workdir, 'ablation.json'))
  return markdown


def dataset_description(config: Any) -> str:
  dataset = config.dataset
  if dataset.name == 'synthetic':
    return f'synthetic, dataset.synthetic.seed={dataset.synthetic.seed}'
  return f'{dataset.name}, split {dataset.train_split} -> {dataset.eval_split}'
