"""What a training workdir is, its config.json, and the workdir a path that is not one was
probably meant to be: one it holds (runs/ -> runs/demo) or one it is inside
(runs/demo/checkpoints -> runs/demo), named in the message ("did you mean runs/demo?")."""

import json
import os
from typing import Any, Optional

from clan_jax.base.errors import UserError

# Every training run writes both before its first step (train/setup.py: write_run_files).
RUN_CONFIG, RUN_CLASSES = 'config.json', 'classes.json'
SEARCH_DEPTH = 3  # Folders below a path looked into: runs/ablation/<variant>/seed<S> from runs.
SEARCH_LIMIT = 2000  # Folders looked at below a path at most: a home folder stays quick.
SHOWN = 3  # Workdirs a message names at most.


def is_workdir(path: str) -> bool:
  return all(os.path.isfile(os.path.join(path, name)) for name in (RUN_CONFIG, RUN_CLASSES))


def shown(path: str) -> str:
  """`path` as a message shows it: relative to the current folder when inside it."""
  path = os.path.abspath(path)
  relative = os.path.relpath(path)
  return path if relative.startswith('..') else relative


def enclosing_workdir(path: str) -> Optional[str]:
  """The nearest folder above `path` that is a training workdir (absolute), if any."""
  folder = os.path.abspath(path)
  while os.path.dirname(folder) != folder:
    folder = os.path.dirname(folder)
    if is_workdir(folder):
      return folder
  return None


def workdirs_below(path: str) -> list[str]:
  """The training workdirs under `path` (absolute, sorted), SEARCH_DEPTH folders deep at most;
  hidden folders, links and the insides of a workdir are not looked into."""
  found, level, visited = [], [os.path.abspath(path)], 0
  for _ in range(SEARCH_DEPTH):
    below = []
    for folder in level:
      try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
      except OSError:
        continue
      for entry in entries:
        if entry.name.startswith('.') or not entry.is_dir(follow_symlinks=False):
          continue
        visited += 1
        if visited > SEARCH_LIMIT:
          return sorted(found)
        (found if is_workdir(entry.path) else below).append(entry.path)
    level = below
  return sorted(found)


def nearby_workdirs(path: str) -> list[str]:
  """The workdir `path` is inside, else the workdirs it holds (absolute)."""
  path = os.path.expanduser(path)
  above = enclosing_workdir(path)
  if above:
    return [above]
  return workdirs_below(path) if os.path.isdir(path) else []


def did_you_mean(path: str) -> str:
  """' did you mean runs/demo?' (or several, or '') for a `path` that is not a workdir."""
  found = [shown(p) for p in nearby_workdirs(path)]
  if not found:
    return ''
  more = f' (and {len(found) - SHOWN} more)' if len(found) > SHOWN else ''
  names = found[:SHOWN]
  listed = names[0] if len(names) == 1 else f'{", ".join(names[:-1])} or {names[-1]}'
  return f' Did you mean {listed}{more}?'


def require_workdir(workdir: str) -> str:
  """`workdir` (~ expanded, absolute) if it is a training workdir; else one UserError that
  names the workdir it holds or is inside, if any."""
  path = os.path.abspath(os.path.expanduser(workdir))  # The shell leaves the ~ of --workdir=~/x.
  if not os.path.isdir(path):
    raise UserError(f'--workdir={workdir}: no such directory.{did_you_mean(path)}')
  if not is_workdir(path):
    hint = did_you_mean(path) or (' Give the --workdir of a training run (python main.py '
                                  '--config=... --workdir=...).')
    raise UserError(f'--workdir={workdir} is not a training workdir: it lacks {RUN_CONFIG} '
                    f'and {RUN_CLASSES}, which training writes first.{hint}')
  return path


def check_training_workdir(workdir: str) -> None:
  """For training: a UserError when `workdir` is not a workdir itself but holds some (a run
  there would mix its files with theirs; `--workdir=runs` meant for `runs/demo`)."""
  path = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(path) or is_workdir(path):
    return
  below = workdirs_below(path)
  if below:
    new = shown(os.path.join(path, 'NAME'))
    raise UserError(f'--workdir={workdir} holds training workdirs, so it is not one itself.'
                    f'{did_you_mean(path)} To resume a run, give its folder; for a new run, a '
                    f'folder of its own (--workdir={new}).')


def read_run_config(workdir: str) -> Any:
  """The config a run was trained with (its workdir's config.json), as a ConfigDict; a
  UserError (with the did-you-mean) when `workdir` is not a training workdir."""
  # Late: clan_jax.convert imports no ml_collections until it reads a workdir.
  import ml_collections

  path = os.path.join(require_workdir(workdir), RUN_CONFIG)
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise UserError(f'{path} cannot be read ({e}).') from None
