"""Training as a library: `train_and_evaluate(config, workdir)` (the set-up: setup.py).

One jitted train step and one eval step over a Mesh: the batch is sharded over 'data', the
state replicated (and donated). Everything that can fail because of the user's input
(config values, missing dataset files, checkpoints that do not fit) fails before anything
compiles. Resumption is exact: the state is restored bit for bit and the input pipeline
restarts at the same stream position (docs/TRAINING.md). Several processes (started by
main.py's flags, clan_jax/train/distributed.py) run the same loop in lockstep: each feeds its slice
of every batch, all checkpoint together, process 0 writes the run's other files.
"""

import dataclasses
import functools
import logging
import os
import signal
import time
from typing import Any, Optional

import jax
import numpy as np
from clu import metrics
from jax.experimental import multihost_utils

from clan_jax.base.errors import UserError
from clan_jax.base.text import plural
from clan_jax.datasets import input_pipeline
from clan_jax.train import (checkpoints, preflight, progress_log, run_report, sharding, steps,
                            workdir_lock)
from clan_jax.train.evaluation import (compile_eval_step, eval_scalars, evaluate_split,
                                       report_results, run_evaluation, training_selection)
from clan_jax.train.metric_writer import create_metric_writer
from clan_jax.train.setup import (Run, abstract_train_state, initial_training_variables,
                                  new_train_state, optimizer_for_run, setup_run, write_run_files)
from clan_jax.train.steps import TrainState
from clan_jax.train.unstarted_run import UnstartedRunCleanup
from clan_jax.viz.attention import training_figures, write_final_figures


class NonFiniteLossError(UserError):
  """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def metric_names(model) -> list[str]:
  heads = ['fused']
  if hasattr(model, 'mid_names'):
    heads += ['top', *model.mid_names, 'concat']
  return (['loss'] + [f'loss_{h}' for h in heads[1:]] + [f'accuracy_{h}' for h in heads]
          + ['learning_rate', 'learning_rate_backbone'])


def train_step_with_metrics(model, tx, schedules, config, collection, state: TrainState,
                            batch: dict) -> tuple[TrainState, Any]:
  """clan_jax.train.steps.train_step with its scalars as a clu metrics collection."""
  state, scalars = steps.train_step(model, tx, schedules, config.model.head_loss_weights,
                                    config.optimizer.label_smoothing, state, batch)
  return state, collection.single_from_model_output(**scalars)


def compile_steps(run: Run, tx, schedules):
  """The jitted train step (state donated) and eval step, with their shardings."""
  replicated = sharding.replicated_sharding(run.mesh)
  data = sharding.data_sharding(run.mesh)
  collection = metrics.Collection.create(
      **{name: metrics.Average.from_output(name) for name in metric_names(run.model)})
  step = functools.partial(train_step_with_metrics, run.model, tx, schedules, run.config,
                           collection)
  train = jax.jit(step,
                  in_shardings=(replicated, data), out_shardings=(replicated, replicated),
                  donate_argnums=0)
  return train, compile_eval_step(run)


class StoppedBySignal(Exception):
  """SIGTERM or SIGINT stopped the run after saving a checkpoint: not finished, not failed;
  the same call (main.py: the same command, exit status cli.EXIT_RESUMABLE) resumes it."""

  def __init__(self, signal_name: str, step: int, directory: str):
    super().__init__(f'stopped by {signal_name} at step {step}; checkpoint saved in '
                     f'{directory}; run the same command to resume.')
    self.signal_name, self.step = signal_name, step


class _Signals:
  """SIGTERM (and SIGINT) ask the loop to checkpoint and stop.

  One process stops at the next step. Several processes must stop at the same step (each
  step and the checkpoint are collective), so there SIGTERM, sent to any or all of them, goes
  through JAX's preemption service (started by jax.distributed.initialize), which agrees on
  the step; SIGINT then keeps Python's default: an interrupt without a checkpoint.
  """

  def __init__(self):
    self.received = None
    self._previous = {}
    self._agreed = jax.process_count() > 1
    # A Python handler would replace the preemption service's own SIGTERM handler.
    for sig in () if self._agreed else (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name

  def stop_at(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step`; call it once at every step."""
    if self._agreed and multihost_utils.reached_preemption_sync_point(step):
      self.received = 'SIGTERM'
    return self.received is not None

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _check_finite(loss, step: int, ckpt: checkpoints.TrainCheckpoints) -> None:
  value = float(loss)
  if not np.isfinite(value):
    ckpt.wait()
    last = ckpt.latest_step()
    kept = f'the last good checkpoint is step {last} in {ckpt.directory}' if last else (
        'no checkpoint was written yet')
    raise NonFiniteLossError(
        f'the loss became {value} at step {step}; stopping ({kept}). Lower '
        'optimizer.learning_rate, or set optimizer.grad_clip_norm.')


def _eval_period(run: Run) -> int:
  """Steps between evaluations; 0: only the final one."""
  every = run.config.eval_every_steps
  return run.steps_per_epoch if every == -1 else max(every, 0)


def _eval_due(run: Run, step: int) -> bool:
  every = _eval_period(run)
  return every > 0 and step % every == 0


def _eval_images(run: Run) -> int:
  """The images one evaluation runs through the model (each split, each flip)."""
  splits = [run.eval_data] + ([run.val_data] if run.val_data is not None else [])
  return sum(s.num_examples for s in splits) * (2 if run.config.eval.flip else 1)


def train_and_evaluate(config: Any, workdir: str) -> dict:
  """Trains (resuming from the newest readable checkpoint), evaluates the final state, and
  returns the contents of eval_results.json; StoppedBySignal after a signal's checkpoint. A
  run already trained to its end and evaluated is only reported (run_report); process 0 holds
  workdir/training.lock from the workdir's check to the end (workdir_lock); a run that fails
  before its first step takes back what it wrote in the workdir (unstarted_run)."""
  finished = run_report.report_if_finished(config, workdir)
  if finished is not None:
    return finished
  # The lock is released before the clean-up, which removes a folder the run created.
  with UnstartedRunCleanup(workdir) as cleanup, workdir_lock.claims() as claim_workdir:
    return _train_and_evaluate(config, workdir, cleanup, claim_workdir)


def _train_and_evaluate(config: Any, workdir: str, cleanup: UnstartedRunCleanup,
                        claim_workdir) -> dict:
  # The lock is taken before the data loads and before Orbax removes unfinished checkpoints.
  run = setup_run(config, workdir, train=True, claim_workdir=claim_workdir)
  preflight.log_short_form(run)  # The splits and weights, first in the log (docs/TRAINING.md).
  ckpt = checkpoints.TrainCheckpoints(os.path.join(run.workdir, 'checkpoints'),
                                      config.keep_checkpoints)
  latest = ckpt.latest_step()
  if latest is None:
    state, tx, schedules = new_train_state(run, initial_training_variables(run))
  else:
    abstract = abstract_train_state(run)
    tx, schedules = optimizer_for_run(run, abstract.params)
    # Newer checkpoints that cannot be read are moved aside, each with a warning.
    state, resumed = ckpt.restore_newest_readable(abstract)
    logging.info('resuming from the checkpoint at step %d', resumed)
  write_run_files(run)
  train_fn, eval_fn = compile_steps(run, tx, schedules)
  train_fn = cleanup.counting_steps(train_fn)
  figures = training_figures(run)
  writer = create_metric_writer(run.workdir, run.is_main_process)
  signals = _Signals()
  try:
    state, results = _train_loop(run, state, train_fn, eval_fn, ckpt, writer, signals, figures)
    if signals.received:
      raise StoppedBySignal(signals.received, int(state.step), ckpt.directory)
    if results is None:  # Trained to the end, not evaluated: evaluate the restored state.
      results = run_evaluation(run, eval_fn, state.variables, 'final', int(state.step),
                               training_selection(run))
    report_results(run, results)
    write_final_figures(run, state.variables, int(state.step), figures)
    run_report.report_end(config, run.workdir)
    return results
  finally:
    signals.restore()
    ckpt.wait()
    ckpt.close()
    writer.flush()


@dataclasses.dataclass
class _Progress:
  """What the loop carries from step to step: the metrics since the last log line, the last
  step's loss (checked while the next step runs) and the clock of the rates and the ETA."""
  clock: progress_log.ProgressClock
  accumulated: Any = None  # A clu metrics collection, merged over the steps since the log.
  pending: Optional[tuple] = None  # (loss, step) not yet checked for NaN.

  def add(self, step: int, step_metrics: Any) -> None:
    self.pending = (step_metrics.loss.compute(), step)
    self.accumulated = (step_metrics if self.accumulated is None
                        else self.accumulated.merge(step_metrics))

  def check_loss(self, ckpt: checkpoints.TrainCheckpoints) -> None:
    if self.pending is not None:
      _check_finite(*self.pending, ckpt)

  def log_step(self, run: Run, step: int, writer) -> None:
    """The train metrics since the last log line and the rates to the metrics, and the
    step's line to the log; starts the next period. Call it once `step` has finished."""
    scalars = {f'train_{k}': float(v) for k, v in self.accumulated.compute().items()}
    self.accumulated = None
    rates, eta = self.clock.take_rates(step), None
    if rates is not None:
      scalars.update(steps_per_sec=rates.steps_per_sec, images_per_sec=rates.images_per_sec)
      evals_left = progress_log.evaluations_from(step, run.total_steps, _eval_period(run))
      eta = self.clock.eta(rates, run.total_steps - step, evals_left, _eval_images(run))
    writer.write_scalars(step, scalars)
    logging.info('%s', progress_log.step_line(step, run.total_steps, scalars['train_loss'],
                                              scalars['train_accuracy_fused'], rates, eta))


def _first_call_one_off(fn, clock: progress_log.ProgressClock):
  """`fn`, whose first call (it compiles) the clock counts as a one-off of its evaluation."""
  called = False

  def call(*args):
    nonlocal called
    if called:
      return fn(*args)
    called = True
    started = clock.now()
    result = jax.block_until_ready(fn(*args))
    clock.one_off(clock.now() - started)
    return result

  return call


def _evaluate(run: Run, eval_fn, state: TrainState, step: int, checkpoint: str,
              writer) -> tuple[dict, dict]:
  """The eval split's results (and the validation split's scalars, eval_val_*) of `state`,
  and the checkpoint's meta: step, each split's top-1, and what the best is chosen on; one
  line in the log."""
  selected = training_selection(run)
  evaluated = run_evaluation(run, eval_fn, state.variables, checkpoint, step, selected)
  writer.write_scalars(step, eval_scalars(evaluated))
  top1 = evaluated['fused']['top1']
  meta = {'step': step, 'eval': {'split': run.config.dataset.eval_split, 'top1': top1},
          'selection': selected}
  validation = None
  if run.val_data is not None:
    validated = evaluate_split(run, eval_fn, state.variables, run.val_data)
    writer.write_scalars(step, eval_scalars(validated, 'eval_val'))
    meta['val'] = {'split': run.val_split, 'top1': validated['fused']['top1']}
    validation = (run.val_split, validated['fused']['top1'])
  logging.info('%s', progress_log.eval_line(step, evaluated['fused'], evaluated['heads'],
                                            validation))
  return evaluated, meta


def _train_loop(run: Run, state: TrainState, train_fn, eval_fn, ckpt, writer, signals,
                figures=None, now=time.monotonic):
  """Steps from state.step to the end; returns the state and the final eval (or None).
  `figures` (viz.attention.AttentionFigures or None) go to TensorBoard at each evaluation;
  `now`: the clock of the rates and the ETA."""
  config = run.config
  start_step = int(state.step)
  selected = training_selection(run)
  logging.info('training %s on %s: %s (%d per epoch), global batch %d, %s',
               type(run.model).__name__, config.dataset.name, plural(run.total_steps, 'step'),
               run.steps_per_epoch, config.batch_size, plural(run.mesh.size, 'device'))
  logging.info('compute dtype %s, from step %d; best checkpoint chosen on the %s (%s)',
               run.dtype, start_step, selected['selected_on'], selected['selection_split'])
  batches = input_pipeline.train_dataset(
      run.train_data, config.dataset, global_batch_size=config.batch_size,
      start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count()).as_numpy_iterator()
  progress = _Progress(progress_log.ProgressClock(config.batch_size, now))
  # Evaluations leave their compilation out of what the ETA expects the next ones to cost.
  eval_fn = _first_call_one_off(eval_fn, progress.clock)
  write_figures = (None if figures is None
                   else _first_call_one_off(figures.write_images, progress.clock))
  results = None
  for step in range(start_step + 1, run.total_steps + 1):
    state, step_metrics = train_fn(state, sharding.global_batch(next(batches), run.mesh))
    progress.check_loss(ckpt)  # The previous step's loss, while this step runs.
    progress.add(step, step_metrics)
    if step == start_step + 1:  # The rates leave out the compilation of the first step.
      jax.block_until_ready(state.step)
      progress.clock.start(step)
    final = step == run.total_steps
    if step % config.log_every_steps == 0 or final:
      progress.check_loss(ckpt)  # Waits for the step: the clock reads a finished one.
      progress.log_step(run, step, writer)
    evaluated = None
    if _eval_due(run, step) or final:
      progress.check_loss(ckpt)
      with progress.clock.evaluation():  # With its figures and checkpoint.
        evaluated, meta = _evaluate(run, eval_fn, state, step, 'final' if final else 'latest',
                                    writer)
        if write_figures:
          write_figures(writer, state.variables, step)
        # Orbax's BestN keeps the checkpoint that ranks first on the selection split.
        ckpt.save(step, state, meta,
                  metrics={'top1': meta['val' if 'val' in meta else 'eval']['top1']})
    stop = signals.stop_at(step)
    if not evaluated and (step % config.checkpoint_every_steps == 0 or stop):
      progress.check_loss(ckpt)
      ckpt.save(step, state, {'step': step, 'eval': None}, metrics=None)
    if final:
      results = evaluated
    if stop:
      ckpt.wait()
      logging.warning('%s received: checkpoint saved at step %d in %s', signals.received, step,
                      ckpt.directory)
      print(f'stopped by {signals.received} at step {step}; checkpoint saved in '
            f'{ckpt.directory}; run the same command to resume.', flush=True)
      break
  return state, results
