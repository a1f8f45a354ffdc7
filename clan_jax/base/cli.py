"""Shared plumbing of the command-line tools: user errors become messages, not tracebacks.

Exit codes: 0 success, 1 a check that failed (e.g. parity above tolerance),
2 a user error (bad flag or config value, missing or refused file), 75 (EXIT_RESUMABLE)
stopped by a signal after saving a checkpoint: rerun the same command to resume.
"""

import os
import sys
from typing import Callable, Sequence

from absl import app, flags

from clan_jax.base import quiet
from clan_jax.base.errors import UserError

EXIT_USER_ERROR = 2
# Training (and the ablation) stopped by SIGTERM or SIGINT after saving a checkpoint: not
# finished, not failed; a requeue loop reruns the command on this status only. 75 is
# EX_TEMPFAIL of BSD's sysexits.h (/usr/include/sysexits.h on Linux): "temp failure; user is
# invited to retry".
EXIT_RESUMABLE = 75
# --checkpoint, spelled the same on every command (clan_jax/inference/model_source.py).
CHECKPOINT_HELP = ("Which weights: 'latest' or 'best' (a checkpoint of --workdir), or a path: a "
                   'variables checkpoint folder (clan_jax.convert) or a PyTorch file of the '
                   'whole model (.pth, .pt, .bin, .safetensors).')


def fail(message: str) -> None:
  """Prints `error: message` on stderr and exits with the user-error status."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def _flag_error_message(error: Exception) -> str:
  # ml_collections wraps a misspelled --config.x.y as AttributeError(KeyError(text)), where
  # text is "'key'" plus, if one is close, a line 'Did you mean "..."?'.
  inner = error.args[0] if error.args else error
  if isinstance(inner, KeyError) and inner.args:
    return f'unknown config key {str(inner.args[0]).strip()}'
  if isinstance(error, ModuleNotFoundError) and error.name == 'configs':
    # The recipes import configs.default, found only from the repository root.
    return (f'{error} (imported by the --config file): run the command from the clan-jax '
            'folder, or add that folder to PYTHONPATH.')
  return str(inner).strip()


def _hint(error: Exception) -> str:
  inner = error.args[0] if error.args else error
  if 'config' in flags.FLAGS and (isinstance(inner, KeyError) or '--config' in str(error)):
    # Config errors point to the list of the config's keys (main.py's --print_config).
    where = '' if 'print_config' in flags.FLAGS else 'python main.py --config=FILE '
    return f'{where}--print_config lists every config key with its value and help.'
  return 'Run with --helpfull to list the flags.'


def parse_flags(argv: Sequence[str],
                explain: Callable[[Sequence[str]], str | None] | None = None) -> list[str]:
  """absl flag parsing that turns any flag or config-override problem into one message;
  `explain(argv)`, when given, may word it better (an unknown config key's suggestions)."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # absl and ml_collections raise many types here.
    message = explain(argv) if explain else None
    if message:
      fail(message)
    detail = _flag_error_message(e).replace('\n', ' ')
    end = ' ' if detail.endswith(('.', '?')) else '. '
    fail(f'invalid command line: {detail}{end}{_hint(e)}')


def make_configs_importable() -> None:
  """Lets a --config recipe import the `configs` package, as `python main.py` and
  `python -m ...` do from the repository root: a console command (clan-train, ...) starts with
  its own bin folder as sys.path[0], so the current folder is added here."""
  if os.getcwd() not in sys.path and '' not in sys.path:
    sys.path.insert(1, os.getcwd())


def run(main: Callable[[list[str]], int | None],
        explain_flag_error: Callable[[Sequence[str]], str | None] | None = None) -> None:
  """Runs an absl `main`, printing UserError messages instead of tracebacks;
  explain_flag_error: see parse_flags."""
  make_configs_importable()  # Before absl parses --config, which loads the recipe.

  def guarded_main(argv: list[str]) -> int | None:
    quiet.quiet_library_logs()  # Before anything starts a JAX backend or Orbax logs.
    try:
      return main(argv)
    except UserError as e:
      fail(str(e))

  app.run(guarded_main, flags_parser=lambda argv: parse_flags(argv, explain_flag_error))
