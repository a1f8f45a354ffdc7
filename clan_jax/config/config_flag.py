"""The --config flag's value: the recipe loaded by ml_collections, validated, or one message."""

from clan_jax.base.errors import UserError
from clan_jax.config.validation import validate_config


def load_config_flag(config_flag) -> object:
  """Validates the --config the user gave and returns it."""
  if config_flag is None:
    raise UserError('--config is required, e.g. --config=configs/default.py.')
  try:
    validate_config(config_flag)
  except OSError as e:  # ml_collections defers a config file that failed to load to here.
    raise UserError(_config_file_message(str(e))) from None
  return config_flag


def _config_file_message(text: str) -> str:
  # ml_collections' text opens with its internal flag name ('... config file config_config')
  # and ends, per path tried, with the OS error ("[Errno 2] No such file ...: 'x.py'").
  reasons = [line.strip() for line in text.splitlines() if line.strip().startswith('[Errno')]
  if not reasons:
    return text
  return (f'the --config file cannot be read: {reasons[-1]}. Give a config file such as '
          'configs/cub.py (a path from the current folder).')
