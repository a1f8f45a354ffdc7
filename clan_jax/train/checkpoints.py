"""Checkpoints on disk: variables-only ones ({'params', 'batch_stats'}, written by
clan_jax.convert), the training run's state checkpoints (TrainCheckpoints) and a read-only
reader of the latter's variables for inference (TrainCheckpointReader).

Orbax writes to a temporary directory and renames it when complete, so a failed or
interrupted save never leaves a half-written checkpoint under the final name, and an
existing checkpoint is never overwritten. A checkpoint damaged afterwards (a truncated or
corrupt file, a missing piece: a disk or a copy that failed) is skipped with a warning that
names it and why: training moves it to <workdir>/damaged_checkpoints/ and resumes from the
newest readable one; inference moves nothing.
"""

import functools
import gc
import logging
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from clan_jax.base.errors import CheckpointError

DAMAGED_FOLDER = 'damaged_checkpoints'  # Beside checkpoints/, out of Orbax's reach.


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
    self.damaged_directory = os.path.join(os.path.dirname(self.directory), DAMAGED_FOLDER)
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
    parameter or statistic; one that cannot be read (nor its meta) raises
    UnreadableCheckpoint.
    """
    ocp = self._ocp
    try:
      self.meta(step)
    except Exception as e:  # Orbax and TensorStore raise many types: any is damage here.
      raise UnreadableCheckpoint(step, f'its meta: {short_reason(e)}') from None
    saved = _state_metadata(self.manager, step)
    mismatches = []
    for collection in ('params', 'batch_stats'):
      mismatches += state_mismatches(saved.get(collection, {}), getattr(target, collection),
                                     prefix=collection)
    if not mismatches:
      try:
        return self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']
      except Exception as e:
        # A damaged file and another optimizer's state both fail here, with the same types:
        # reading the checkpoint as it was saved (into host memory) tells them apart.
        reason = self._unreadable(step, saved)
        if reason:
          raise UnreadableCheckpoint(step, reason) from None
        if not isinstance(e, (ValueError, KeyError, TypeError)):  # E.g. another optimizer's.
          raise
        mismatches = [f'{type(e).__name__}: {str(e)[:500]}']
        if 'opt_state' in str(e):
          mismatches.insert(0, OPTIMIZER_MISMATCH)
    raise _does_not_fit(self.directory, step, mismatches, ', or another --workdir')

  def _unreadable(self, step: int, saved: Any) -> str | None:
    """Why the state at `step` cannot be read as saved, or None if it can."""
    ocp = self._ocp
    as_saved = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), saved, is_leaf=_is_array)
    try:
      self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(
          as_saved)))
    except Exception as e:
      return short_reason(e)
    return None

  def restore_newest_readable(self, target: Any) -> tuple[Any, int] | None:
    """(state, step) of the newest checkpoint that can be read, laid out like `target`;
    None without checkpoints. Newer ones that cannot be read are moved to
    damaged_directory (never deleted), each with a warning naming it, why and the step
    resumed from; if none can be read, CheckpointError naming each, nothing moved."""
    state, step, unreadable = _newest_readable(
        self.manager.all_steps(), lambda step: self.restore(step, target))
    if step is not None:
      for damaged, why in unreadable:
        moved_to = self._move_aside(damaged)
        logging.warning('checkpoint step %d in %s cannot be read (%s); moved to %s; resuming '
                        'from step %d', damaged, self.directory, why, moved_to, step)
      return state, step
    if unreadable:
      raise CheckpointError(
          f'no checkpoint in {self.directory} can be read:\n  '
          + '\n  '.join(f'step {damaged}: {why}' for damaged, why in unreadable)
          + '\nNothing was moved or deleted. Restore them from a copy, or move the '
          'checkpoints folder away to train from the start (or use another --workdir).')
    return None

  def _move_aside(self, step: int) -> str:
    """Moves checkpoint `step` to damaged_directory/<step>-<UTC time> (process 0; the
    others wait) and makes Orbax forget it; returns where it went."""
    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
    destination = os.path.join(self.damaged_directory, f'{step}-{stamp}')
    if jax.process_index() == 0:
      source = os.path.join(self.directory, str(step))
      try:
        os.makedirs(self.damaged_directory, exist_ok=True)
        suffix = 1
        while os.path.exists(destination):  # The same step moved twice in one second.
          destination = os.path.join(self.damaged_directory, f'{step}-{stamp}-{suffix}')
          suffix += 1
        os.rename(source, destination)
      except OSError as e:
        raise CheckpointError(
            f'checkpoint step {step} in {self.directory} cannot be read and could not be '
            f'moved to {destination}: {e.strerror or e}. Move {source} out of '
            f'{self.directory} yourself, then run the same command.') from None
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'damaged checkpoint {step} moved')
    self.manager.reload()
    return destination

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


class UnreadableCheckpoint(Exception):
  """A checkpoint that cannot be read: a truncated or corrupt file, a missing piece."""

  def __init__(self, step: int, reason: str):
    super().__init__(f'checkpoint step {step} cannot be read: {reason}')
    self.step, self.reason = step, reason


def short_reason(error: BaseException) -> str:
  """One line for why a read failed: the innermost error (TensorStore's names the file and
  the problem; the outer ones repeat a whole spec) without TensorStore's spec, its end
  kept if it is long."""
  while error.__cause__ is not None or (error.__context__ is not None
                                        and not error.__suppress_context__):
    error = error.__cause__ or error.__context__
  text = re.split(r' \[(?:source locations|tensorstore_spec)=', str(error))[0]
  text = ' '.join(text.split())
  if not re.match(r'[A-Z_]+: ', text):  # TensorStore's start with a status (DATA_LOSS: ...).
    text = f'{type(error).__name__}: {text}' if text else type(error).__name__
  return text if len(text) <= 400 else '...' + text[-397:]


def _newest_readable(steps, read: Callable[[int], Any]) -> tuple[Any, int | None, list]:
  """(read(step), step, unreadable) for the newest step that reads, or (None, None,
  unreadable) if none does; unreadable: (step, reason) of the newer ones, newest first."""
  unreadable = []
  for step in sorted(steps, reverse=True):
    value, reason = _read_or_reason(functools.partial(read, step))
    if reason is None:
      return value, step, unreadable
    unreadable.append((step, reason))
  return None, None, unreadable


def _read_or_reason(read: Callable[[], Any]) -> tuple[Any, str | None]:
  """(read(), None), or (None, why) if it raised UnreadableCheckpoint (its reads' dying
  complaints silenced: _drop_abandoned_read_reports)."""
  _drop_abandoned_read_reports()
  try:
    return read(), None
  except UnreadableCheckpoint as e:
    reason = e.reason
  gc.collect()  # The failed restore's pending reads, now that its error is dropped.
  return None, reason


def _is_abandoned_read_report(unraisable: Any) -> bool:
  error, origin = unraisable.exc_value, unraisable.object
  return ((isinstance(error, RuntimeError) and str(error) == 'Event loop is closed')
          or getattr(origin, '__qualname__', '') == '_read_array_index_and_device_put')


def _drop_abandoned_read_reports() -> None:
  """When one array of an Orbax restore cannot be read (orbax 0.12.8), its other reads are
  abandoned: they complete in TensorStore's threads into an event loop already closed, or
  are collected unfinished, and each prints a traceback ('Event loop is closed', dozens for a
  train state) through sys.unraisablehook. Those reports, and only those, are dropped from
  then on; any other goes to the hook in place before."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_abandoned_reads', False):
    return

  def hook(unraisable):
    if not _is_abandoned_read_report(unraisable):
      previous(unraisable)

  hook.drops_abandoned_reads = True
  sys.unraisablehook = hook


def _is_array(leaf: Any) -> bool:
  return hasattr(leaf, 'shape') and hasattr(leaf, 'dtype')


def _state_metadata(manager, step: int) -> Any:
  """The saved state's tree of array metadata; UnreadableCheckpoint if it cannot be read."""
  try:
    saved = manager.item_metadata(step)['state']
  except Exception as e:  # Orbax and TensorStore raise many types: any is damage here.
    raise UnreadableCheckpoint(step, f'its layout: {short_reason(e)}') from None
  if saved is None:
    raise UnreadableCheckpoint(step, 'its layout (state/_METADATA) is missing')
  return saved


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
    arrays with shardings); CheckpointError naming every mismatch if they do not fit,
    UnreadableCheckpoint if they cannot be read."""
    ocp = self._ocp
    saved = _state_metadata(self.manager, step)
    mismatches = []
    for collection in ('params', 'batch_stats'):
      mismatches += state_mismatches(saved.get(collection, {}), target[collection],
                                     prefix=collection)
    if mismatches:
      raise _does_not_fit(self.directory, step, mismatches)
    target = {collection: target[collection] for collection in ('params', 'batch_stats')}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                       partial_restore=True)))
    except Exception as e:  # The layout fits (checked above): the files are damaged.
      raise UnreadableCheckpoint(step, short_reason(e)) from None
    return dict(restored['state'])

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
  with `alternative` (what else the user can do) or, for 'best', points to 'latest'.
  'latest' is the newest checkpoint that can be read: a newer one that cannot is named in a
  warning and left where it is (training, which owns the workdir, moves it aside)."""
  reader = TrainCheckpointReader(directory)
  try:
    step = reader.best_step() if which == 'best' else reader.latest_step()
    if step is None:
      raise CheckpointError(
          f'no {"evaluated " if which == "best" else ""}checkpoint in {reader.directory}; train '
          'first' + (', or use --checkpoint=latest.' if which == 'best' else f'{alternative}.'))
    abstract = target()
    if which == 'best':
      variables, reason = _read_or_reason(functools.partial(reader.variables_at, step, abstract))
      if reason is not None:
        raise CheckpointError(f'the best checkpoint, step {step} in {reader.directory}, '
                              f'cannot be read ({reason}); use --checkpoint=latest'
                              f'{alternative}.')
      return variables, step
    return _newest_readable_variables(reader, abstract, alternative)
  finally:
    reader.close()


def _newest_readable_variables(reader: TrainCheckpointReader, abstract: dict,
                               alternative: str) -> tuple[dict, int]:
  variables, step, unreadable = _newest_readable(
      reader.manager.all_steps(), lambda step: reader.variables_at(step, abstract))
  if step is not None:
    for damaged, why in unreadable:
      logging.warning('checkpoint step %d in %s cannot be read (%s); using step %d (nothing '
                      'moved: training in this workdir moves it to %s/)', damaged,
                      reader.directory, why, step, DAMAGED_FOLDER)
    return variables, step
  raise CheckpointError(
      f'no checkpoint in {reader.directory} can be read:\n  '
      + '\n  '.join(f'step {damaged}: {why}' for damaged, why in unreadable)
      + f'\nNothing was moved or deleted. Train again{alternative}.')


def read_run_meta(directory: str | os.PathLike, step: int) -> dict:
  """The meta of a run's checkpoint at `step`, read without changing the directory;
  CheckpointError if it cannot be read."""
  reader = TrainCheckpointReader(directory)
  try:
    return reader.meta(step)
  except Exception as e:  # Orbax and TensorStore raise many types: any is damage here.
    raise CheckpointError(f'the meta of checkpoint step {step} in {reader.directory} cannot be '
                          f'read ({short_reason(e)}); use --checkpoint=latest.') from None
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
