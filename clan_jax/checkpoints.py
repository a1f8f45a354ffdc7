"""Variables-only Orbax checkpoints ({'params', 'batch_stats'}), as written by clan_jax.convert.

Orbax writes to a temporary directory and renames it when complete, so a failed or
interrupted save never leaves a half-written checkpoint under the final name, and an
existing checkpoint is never overwritten.
"""

import os
from typing import Any

from clan_jax.errors import CheckpointError


def save_variables(variables: dict[str, Any], directory: str | os.PathLike) -> str:
  """Writes `variables` as a StandardSave checkpoint at `directory` (which must not exist)."""
  import orbax.checkpoint as ocp  # Lazy: orbax is heavy and only file I/O needs it.

  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory):
    raise CheckpointError(f'{directory} already exists; it is never overwritten. Remove it or '
                          'choose another output directory.')
  os.makedirs(os.path.dirname(directory), exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, dict(variables))
    checkpointer.wait_until_finished()
  return directory


def restore_variables(directory: str | os.PathLike) -> dict[str, Any]:
  """Reads a variables checkpoint written by `save_variables` (arrays as saved)."""
  import orbax.checkpoint as ocp

  directory = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(directory):
    raise CheckpointError(f'{directory}: no such checkpoint directory.')
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(directory)
