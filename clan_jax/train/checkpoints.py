"""Checkpoints on disk: variables-only ones ({'params', 'batch_stats'}, written by
clan_jax.convert), the training run's state checkpoints (TrainCheckpoints) and a read-only
reader of the latter's variables for inference (TrainCheckpointReader).

Orbax writes to a temporary directory and renames it when complete, so a failed or
interrupted save never leaves a half-written checkpoint under the final name, and an
existing checkpoint is never overwritten.
"""

import os
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp

from clan_jax.base.errors import CheckpointError


def ensure_writable_folder(folder: str, what: str) -> None:
  """Creates `folder` if needed and checks that a file can be written in it, so that a save
  fails here with a message rather than in Orbax's writer (which, asynchronous, hung)."""
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise CheckpointError(f'{what} {folder} is a file, not a folder; choose another path.')
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise CheckpointError(f'cannot write {what} {folder}: {e.strerror or e}. Choose a folder '
                          'you can write to (and with free space).') from None


def save_variables(variables: dict[str, Any], directory: str | os.PathLike) -> str:
  """Writes `variables` as a StandardSave checkpoint at `directory` (which must not exist)."""
  import orbax.checkpoint as ocp  # Late: orbax is heavy and only file I/O needs it.

  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory):
    raise CheckpointError(f'{directory} already exists; it is never overwritten. Remove it or '
                          'choose another output directory.')
  ensure_writable_folder(os.path.dirname(directory), 'the output folder')
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, dict(variables))
    checkpointer.wait_until_finished()
  return directory


def load_variables_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
  """Reads a variables checkpoint written by `save_variables` (arrays as saved)."""
  import orbax.checkpoint as ocp  # Late: orbax is heavy and only file I/O needs it.

  directory = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(directory):
    raise CheckpointError(f'{directory}: no such checkpoint directory.')
  if not os.path.exists(os.path.join(directory, '_METADATA')):
    kind = ("a training run's checkpoint (its whole train state); to continue that run, "
            'give its --workdir' if os.path.isdir(os.path.join(directory, 'state'))
            else 'not a checkpoint')
    raise CheckpointError(f'{directory} is not a variables checkpoint written by '
                          f'clan_jax.convert (it has no _METADATA): {kind}.')
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(directory)


def load_variables_checkpoint_like(directory: str | os.PathLike, expected: Any,
                                   name: str) -> dict[str, Any]:
  """A variables checkpoint laid out and typed like `expected` (the model's variables, or
  their shapes); CheckpointError naming every mismatch, the checkpoint called `name`."""
  loaded = load_variables_checkpoint(directory)
  mismatches = state_mismatches(loaded, expected)
  if mismatches:
    raise CheckpointError(f'{name} does not fit the model:\n  ' + '\n  '.join(mismatches))
  return jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), loaded, dict(expected))


class TrainCheckpoints:
  """Train-state checkpoints in <workdir>/checkpoints/<step>/: the last N plus the best.

  Each checkpoint holds the train state and a JSON `meta` item: 'step', and for checkpoints
  taken at an evaluation 'eval' (and 'val', with a validation split): {'split', 'top1'}, and
  'selection' ({'selected_on', 'selection_split'}: what the best is ranked on, the
  validation split's top-1 when there is one; clan_jax/train/evaluation.py).
  Saves are atomic (Orbax renames a finished temporary directory), so a run killed at any
  moment leaves the previous checkpoints intact, and synchronous: a save that fails (a full
  disk, lost permissions) raises CheckpointError at once and the run stops, where Orbax's
  asynchronous writer logged the failure, went on training without checkpoints and then
  hung in wait_until_finished (orbax 0.12.8). The cost: training waits for each save, once
  every checkpoint_every_steps (a CLAN-R50 state's save time: BENCHMARKS.md).
  """

  def __init__(self, directory: str | os.PathLike, keep_last: int):
    import orbax.checkpoint as ocp  # Late: orbax is heavy and only file I/O needs it.
    from orbax.checkpoint import checkpoint_managers as policies  # Late: as ocp.

    self._ocp = ocp
    best = policies.BestN(get_metric_fn=lambda metrics: metrics['top1'], n=1,
                          keep_checkpoints_without_metrics=False)
    # best_fn makes Orbax write each checkpoint's metrics, which BestN ranks.
    options = ocp.CheckpointManagerOptions(
        best_fn=lambda metrics: metrics['top1'], best_mode='max',
        preservation_policy=policies.AnyPreservationPolicy([policies.LatestN(keep_last), best]),
        cleanup_tmp_directories=True, create=True, enable_async_checkpointing=False)
    self.directory = os.path.abspath(os.fspath(directory))
    ensure_writable_folder(self.directory, 'the checkpoint folder')
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> None:
    ocp = self._ocp
    try:
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)),
                        metrics=metrics, force=True)
    except OSError as e:
      raise CheckpointError(
          f'the checkpoint of step {step} could not be written to {self.directory}: '
          f'{e.strerror or e}. The run stops; its earlier checkpoints are intact. Free some '
          'space or fix the permissions, then run the same command to resume.') from None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The evaluated step with the highest top-1 (None if no checkpoint was evaluated)."""
    return _best_step(self.manager)

  def meta(self, step: int) -> dict:
    ocp = self._ocp
    return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                ['meta'])

  def restore(self, step: int, target: Any) -> Any:
    """The state at `step`, laid out like `target` (abstract arrays with shardings).

    A checkpoint that does not fit raises CheckpointError naming every mismatched
    parameter or statistic.
    """
    ocp = self._ocp
    saved = self.manager.item_metadata(step)['state']
    mismatches = []
    for collection in ('params', 'batch_stats'):
      mismatches += state_mismatches(saved.get(collection, {}), getattr(target, collection),
                                     prefix=collection)
    if not mismatches:
      try:
        return self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']
      except (ValueError, KeyError, TypeError) as e:  # E.g. another optimizer's state.
        mismatches = [f'{type(e).__name__}: {str(e)[:500]}']
        if 'opt_state' in str(e):
          mismatches.insert(0, OPTIMIZER_MISMATCH)
    raise _does_not_fit(self.directory, step, mismatches, ', or another --workdir')

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


OPTIMIZER_MISMATCH = (
    "opt_state: the optimizer state saved there has another structure than this config's "
    'optimizer (optimizer.name changed, or momentum set to or from 0?); in detail:')


def _does_not_fit(directory: str, step: int, mismatches: list[str],
                  alternative: str = '') -> CheckpointError:
  return CheckpointError(
      f'the checkpoint at {directory}/{step} does not fit the configuration:\n  '
      + '\n  '.join(mismatches) + f'\nUse the config it was trained with (config.json '
      f'beside it){alternative}.')


def _best_step(manager) -> int | None:
  scored = [step for step in manager.all_steps() if manager.metrics(step)]
  return manager.best_step() if scored else None


class TrainCheckpointReader:
  """Reads a training run's checkpoints for inference, changing nothing on disk.

  Unlike TrainCheckpoints it creates no directory and removes no temporary checkpoint, so
  it is safe on the workdir of a run that is still training; and it reads only the
  variables ({'params', 'batch_stats'}), not the optimizer state, so neither the optimizer
  config nor its memory is needed.
  """

  def __init__(self, directory: str | os.PathLike):
    import orbax.checkpoint as ocp  # Late: orbax is heavy and only file I/O needs it.

    self._ocp = ocp
    self.directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(self.directory):
      raise CheckpointError(f'{self.directory}: no such checkpoint directory; train first '
                            '(python main.py --config=... --workdir=...).')
    options = ocp.CheckpointManagerOptions(read_only=True, best_fn=lambda m: m['top1'],
                                           best_mode='max')
    # PyTreeCheckpointHandler reads what StandardCheckpointHandler wrote, and restores a part.
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The evaluated step with the highest top-1 (None if no checkpoint was evaluated)."""
    return _best_step(self.manager)

  def variables_at(self, step: int, target: dict) -> dict:
    """{'params', 'batch_stats'} of the state at `step`, laid out like `target` (abstract
    arrays with shardings); CheckpointError naming every mismatch if they do not fit."""
    ocp = self._ocp
    saved = self.manager.item_metadata(step)['state']
    mismatches = []
    for collection in ('params', 'batch_stats'):
      mismatches += state_mismatches(saved.get(collection, {}), target[collection],
                                     prefix=collection)
    if mismatches:
      raise _does_not_fit(self.directory, step, mismatches)
    target = {collection: target[collection] for collection in ('params', 'batch_stats')}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    return dict(self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True)))['state'])

  def meta(self, step: int) -> dict:
    """The JSON meta saved with the checkpoint at `step` (TrainCheckpoints' docstring)."""
    ocp = self._ocp
    return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                ['meta'])

  def close(self) -> None:
    self.manager.close()


def load_run_variables(directory: str | os.PathLike, which: str, target: Callable[[], dict],
                   alternative: str = '') -> tuple[dict, int]:
  """({'params', 'batch_stats'}, step) of a run's 'latest' or 'best' (evaluated) checkpoint,
  read without changing the directory, laid out like `target()` (abstract arrays with
  shardings; built only if there is a checkpoint). With none, a CheckpointError that ends
  with `alternative` (what else the user can do) or, for 'best', points to 'latest'."""
  reader = TrainCheckpointReader(directory)
  try:
    step = reader.best_step() if which == 'best' else reader.latest_step()
    if step is None:
      raise CheckpointError(
          f'no {"evaluated " if which == "best" else ""}checkpoint in {reader.directory}; train '
          'first' + (', or use --checkpoint=latest.' if which == 'best' else f'{alternative}.'))
    return reader.variables_at(step, target()), step
  finally:
    reader.close()


def read_run_meta(directory: str | os.PathLike, step: int) -> dict:
  """The meta of a run's checkpoint at `step`, read without changing the directory."""
  reader = TrainCheckpointReader(directory)
  try:
    return reader.meta(step)
  finally:
    reader.close()


def state_mismatches(saved: Any, target: Any, prefix: str = '') -> list[str]:
  """Paths missing, unexpected or of another shape in a saved tree, against `target`."""
  def shapes(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): tuple(getattr(leaf, 'shape', ()))
            for path, leaf in leaves}

  saved_shapes, target_shapes = shapes(saved), shapes(target)
  lines = [f'missing from the checkpoint: {p}'
           for p in sorted(set(target_shapes) - set(saved_shapes))]
  lines += [f'in the checkpoint but not in this model: {p}'
            for p in sorted(set(saved_shapes) - set(target_shapes))]
  lines += [f'{p}: checkpoint {saved_shapes[p]}, model {target_shapes[p]}'
            for p in sorted(set(saved_shapes) & set(target_shapes))
            if saved_shapes[p] != target_shapes[p]]
  return lines
