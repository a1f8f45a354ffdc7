"""The --config flag's value: the recipe loaded by ml_collections, validated, or one message;
and the message for a `--config.KEY=VALUE` whose KEY the recipe does not have."""

import re
from typing import Any, Optional, Sequence

from absl import flags

from clan_jax.base.errors import UserError
from clan_jax.config.config_keys import closest_keys, dotted_items, is_known
from clan_jax.config.validation import validate_config

PRINT_CONFIG_HINT = '--print_config lists every config key with its value and help'


def loaded_config(config_flag) -> Any:
  """The --config the user gave, loaded but not validated (what --print_config shows)."""
  if config_flag is None:
    raise UserError('--config is required, e.g. --config=configs/default.py.')
  try:
    config_flag.keys()  # ml_collections defers a config file that failed to load to here.
  except OSError as e:
    raise UserError(_config_file_message(str(e))) from None
  return config_flag


def load_config_flag(config_flag) -> object:
  """Validates the --config the user gave and returns it."""
  config = loaded_config(config_flag)
  try:
    validate_config(config)
  except OSError as e:
    raise UserError(_config_file_message(str(e))) from None
  return config


def _config_file_message(text: str) -> str:
  # ml_collections' text opens with its internal flag name ('... config file config_config')
  # and ends, per path tried, with the OS error ("[Errno 2] No such file ...: 'x.py'").
  reasons = [line.strip() for line in text.splitlines() if line.strip().startswith('[Errno')]
  if not reasons:
    return text
  return (f'the --config file cannot be read: {reasons[-1]}. Give a config file such as '
          'configs/cub.py (a path from the current folder).')


def _config_path(argv: Sequence[str]) -> Optional[str]:
  for i, arg in enumerate(argv):
    if re.fullmatch(r'--?config', arg) and i + 1 < len(argv):
      return argv[i + 1]
    if re.match(r'--?config=', arg):
      return arg.split('=', 1)[1]
  return None


def unknown_key_message(argv: Sequence[str], config_flag) -> Optional[str]:
  """One line for the first `--config.KEY` of argv that the recipe lacks, with the closest
  existing dotted keys of any section, or for a `--config.KEY` without --config; None when
  every KEY exists (another problem).

  ml_collections' own error names only the last component ('dept', not 'model.dept') and
  looks only in that section, so the recipe is loaded again here to see all its keys."""
  path = _config_path(argv)
  if path is None:
    return _override_without_config(argv)
  try:
    keys = list(dotted_items(config_flag.parser.parse(path)))
  except Exception:  # A recipe that fails to load has its own message.
    return None
  for arg in argv:
    override = re.match(r'--?(?:no)?config\.([^=]+)', arg)
    if override and not is_known(override.group(1), keys):
      key = override.group(1)
      suggestions = closest_keys(key, keys)
      hint = f'did you mean {" or ".join(suggestions)}? ' if suggestions else ''
      # Only main.py has the flag: other commands point to it.
      where = '' if 'print_config' in flags.FLAGS else f'python main.py --config={path} '
      return f"unknown config key '{key}' ({arg}); {hint}{where}{PRINT_CONFIG_HINT}."
  return None


def _override_without_config(argv: Sequence[str]) -> Optional[str]:
  """The line for a `--config.KEY=VALUE` given without --config: it has nothing to change."""
  for arg in argv:
    if re.match(r'--?(?:no)?config\.', arg):
      # main.py --mode=eval|visualize reads the run's config.json, which takes no overrides.
      return (f'{arg} changes a key of --config, which is not given: add --config=FILE (the '
              'configs/*.py file the run was trained with, for --mode=eval or visualize).')
  return None


def explain_flag_error(argv: Sequence[str]) -> Optional[str]:
  """For cli.run: the unknown-key message of the command's --config flag, if that is the error."""
  return unknown_key_message(argv, flags.FLAGS['config']) if 'config' in flags.FLAGS else None
