"""Errors that the command-line tools report as a message, not a traceback."""


class UserError(Exception):
  """A problem the user can fix (bad flag, missing file, refused checkpoint).

  The command-line entry points print its message and exit with status 2.
  """


class ConfigError(UserError, ValueError):
  """An invalid configuration value; the message names the field and what is allowed."""


class CheckpointError(UserError, ValueError):
  """A checkpoint that cannot be loaded or does not fit the model."""
