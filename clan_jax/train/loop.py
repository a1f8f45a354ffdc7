"""Training and evaluation as a library: `train_and_evaluate(config, workdir)`, `evaluate(...)`.

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
import json
import logging
import os
import signal
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers, metrics, periodic_actions
from jax.experimental import multihost_utils

from clan_jax import convert

from clan_jax.train import checkpoints

from clan_jax.train import distributed

from clan_jax.train import evaluation

from clan_jax.datasets import input_pipeline

from clan_jax.train import optim

from clan_jax.train import sharding

from clan_jax.train import steps

from clan_jax.viz import attention as visualize
from clan_jax.config.validation import validate_config
from clan_jax.base.errors import ConfigError, UserError
from clan_jax.models import create_model
from clan_jax.train.steps import TrainState


class NonFiniteLossError(UserError):
  """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclasses.dataclass
class Run:
  """What a run needs, set up (and checked) before anything compiles."""
  config: Any
  workdir: str
  mesh: Any
  model: Any
  class_names: list[str]
  train_data: Optional[input_pipeline.SplitData]
  eval_data: input_pipeline.SplitData
  steps_per_epoch: int
  total_steps: int

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def eval_batch_size(self) -> int:
    return self.config.eval_batch_size or self.config.batch_size

  @property
  def is_main_process(self) -> bool:
    """Process 0 writes the run's files, metrics and results; every process checkpoints."""
    return distributed.is_main_process()


def setup_run(config: Any, workdir: str, *, train: bool) -> Run:
  """Validates the config, loads (building if needed) the data, builds the model."""
  validate_config(config)
  if not workdir:
    raise ConfigError('--workdir is required: the folder for checkpoints, metrics and results.')
  # Before the data loads, a bad folder fails at once. Process 0 alone writes the run's files
  # (the others write only under checkpoints/, which TrainCheckpoints checks in each).
  if (train or os.path.exists(workdir)) and distributed.is_main_process():
    checkpoints.ensure_writable_folder(os.path.abspath(workdir), '--workdir')
  distributed.check_runtime()
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size or config.batch_size, mesh)
  dataset = config.dataset
  # Several processes building one dataset at once would race on shared storage.
  build = jax.process_count() == 1
  eval_data = input_pipeline.load_split(dataset, dataset.eval_split, build=build)
  train_data = (input_pipeline.load_split(dataset, dataset.train_split, build=build)
                if train else None)
  class_names = eval_data.class_names
  if dataset.num_classes and dataset.num_classes != len(class_names):
    raise ConfigError(f'dataset.num_classes={dataset.num_classes} but the dataset has '
                      f'{len(class_names)} classes; set it to 0 (from the dataset).')
  steps_per_epoch = input_pipeline.steps_per_epoch(
      train_data.num_examples if train_data else 1, config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.num_epochs * steps_per_epoch)
  model = create_model(config.model, len(class_names))
  return Run(config, os.path.abspath(workdir), mesh, model, class_names, train_data, eval_data,
             steps_per_epoch, total_steps)


# ----------------------------------------------------------------------- state and steps

def create_optimizer(run: Run, params: Any):
  warmup = int(round(run.config.optimizer.warmup_epochs * run.steps_per_epoch))
  return optim.create_optimizer(run.config.optimizer, params, num_classes=run.num_classes,
                                batch_size=run.config.batch_size, total_steps=run.total_steps,
                                warmup_steps=warmup)


def initial_variables(run: Run) -> dict:
  """Initialised variables, with the weights of init.torch_checkpoint or init.checkpoint."""
  init = run.config.init
  size = run.config.dataset.crop_size
  rng = jax.random.PRNGKey(run.config.seed)
  if init.torch_checkpoint:
    arrays = convert.load_torch_checkpoint(
        init.torch_checkpoint, [g for g in init.allowed_globals.split(',') if g])
    logging.info('initialising from %s (%s)', init.torch_checkpoint,
                 'backbone only' if init.torch_backbone_only else 'whole model')
    return convert.torch_to_flax(arrays, run.model, image_size=size,
                                 backbone_only=init.torch_backbone_only, rng=rng)
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  variables = jax.jit(functools.partial(run.model.init, train=False))(rng, images)
  if init.checkpoint:
    loaded = checkpoints.restore_variables(init.checkpoint)
    mismatches = checkpoints.state_mismatches(loaded, variables)
    if mismatches:
      raise UserError(f'init.checkpoint={init.checkpoint} does not fit the model:\n  '
                      + '\n  '.join(mismatches))
    logging.info('initialising from %s', init.checkpoint)
    variables = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), loaded, variables)
  return variables


def create_train_state(run: Run, variables: dict) -> tuple[TrainState, Any, dict]:
  tx, schedules = create_optimizer(run, variables['params'])
  state = steps.create_train_state(variables['params'], variables['batch_stats'], tx)
  return jax.device_put(state, sharding.replicated_sharding(run.mesh)), tx, schedules


def metric_names(model) -> list[str]:
  heads = ['fused']
  if hasattr(model, 'mid_names'):
    heads += ['top', *model.mid_names, 'concat']
  return (['loss'] + [f'loss_{h}' for h in heads[1:]] + [f'accuracy_{h}' for h in heads]
          + ['learning_rate', 'learning_rate_backbone'])


def train_step(model, tx, schedules, config, collection, state: TrainState,
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
  train = jax.jit(functools.partial(train_step, run.model, tx, schedules, run.config, collection),
                  in_shardings=(replicated, data), out_shardings=(replicated, replicated),
                  donate_argnums=0)
  return train, compile_eval_step(run)


def compile_eval_step(run: Run):
  """The jitted eval step: variables replicated, batch and per-example outputs over 'data'."""
  data = sharding.data_sharding(run.mesh)
  return jax.jit(lambda variables, batch: evaluation.eval_step(run.model, variables, batch),
                 in_shardings=(sharding.replicated_sharding(run.mesh), data), out_shardings=data)


# -------------------------------------------------------------------------- evaluation

def run_evaluation(run: Run, eval_fn, variables, checkpoint: str, step: int) -> dict:
  ds = input_pipeline.eval_dataset(run.eval_data, run.config.dataset,
                                   global_batch_size=run.eval_batch_size,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  results = evaluation.evaluate_batches(
      lambda batch: eval_fn(variables, batch), ds.as_numpy_iterator(), run.num_classes,
      lambda batch: sharding.global_batch(batch, run.mesh), sharding.to_host)
  results['protocol'] = {
      'split': run.config.dataset.eval_split, 'crop': 'center',
      'image_size': run.config.dataset.crop_size,
      'fusion': run.config.model.fusion if run.config.model.name == 'clan' else 'none',
      'checkpoint': checkpoint, 'step': int(step)}
  if checkpoint == 'best':
    results['protocol']['selected_on'] = f'{run.config.dataset.eval_split} split top-1'
  return results


def eval_scalars(results: dict) -> dict:
  scalars = {f'eval_{k}_fused': v for k, v in results['fused'].items()}
  for head, values in results['heads'].items():
    scalars.update({f'eval_{k}_{head}': v for k, v in values.items()})
  return scalars


# ----------------------------------------------------------------------------- the loop

def _write_run_files(run: Run) -> None:
  """config.json (the resolved config) and classes.json; an older differing config is kept."""
  if not run.is_main_process:
    return
  os.makedirs(run.workdir, exist_ok=True)
  config_path = os.path.join(run.workdir, 'config.json')
  resolved = json.loads(run.config.to_json_best_effort())
  if os.path.exists(config_path):
    with open(config_path) as f:
      previous = json.load(f)
    if previous != resolved:
      kept = os.path.join(run.workdir, f'config.{int(time.time())}.json')
      os.replace(config_path, kept)
      logging.warning('the config differs from this workdir\'s config.json; the old one is '
                      'kept as %s', kept)
  evaluation.write_json(resolved, config_path)
  evaluation.write_json({'classes': run.class_names}, os.path.join(run.workdir,
                                                                       'classes.json'))


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


def _eval_due(run: Run, step: int) -> bool:
  every = run.config.eval_every_steps
  if every == -1:
    every = run.steps_per_epoch
  return every > 0 and step % every == 0


def train_and_evaluate(config: Any, workdir: str) -> dict:
  """Trains (resuming from the latest checkpoint), evaluates the final state, and returns
  the contents of eval_results.json ({} if a signal stopped the run)."""
  run = setup_run(config, workdir, train=True)
  ckpt = checkpoints.TrainCheckpoints(os.path.join(run.workdir, 'checkpoints'),
                                      config.keep_checkpoints)
  latest = ckpt.latest_step()
  if latest is None:
    state, tx, schedules = create_train_state(run, initial_variables(run))
  else:
    abstract = _abstract_train_state(run)
    tx, schedules = create_optimizer(run, abstract.params)
    state = ckpt.restore(latest, abstract)
    logging.info('resuming from the checkpoint at step %d', latest)
  _write_run_files(run)
  train_fn, eval_fn = compile_steps(run, tx, schedules)
  figures = visualize.training_figures(run)
  writer = metric_writers.create_default_writer(run.workdir, just_logging=not run.is_main_process)
  signals = _Signals()
  try:
    state, results = _train_loop(run, state, train_fn, eval_fn, ckpt, writer, signals, figures)
    if signals.received:
      return {}
    if results is None:  # Already trained to the end: evaluate the restored state.
      results = run_evaluation(run, eval_fn, state.variables, 'final', int(state.step))
    _finish(run, results)
    return results
  finally:
    signals.restore()
    ckpt.wait()
    ckpt.close()
    writer.flush()


def _train_loop(run: Run, state: TrainState, train_fn, eval_fn, ckpt, writer, signals,
                figures=None):
  """Steps from state.step to the end; returns the state and the final eval (or None).
  `figures` (visualize.AttentionFigures or None) go to TensorBoard at each evaluation."""
  config = run.config
  start_step = int(state.step)
  logging.info('training %s on %s: %d steps (%d per epoch), global batch %d, %d devices, '
               'from step %d', type(run.model).__name__, config.dataset.name, run.total_steps,
               run.steps_per_epoch, config.batch_size, run.mesh.size, start_step)
  batches = input_pipeline.train_dataset(
      run.train_data, config.dataset, global_batch_size=config.batch_size,
      start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count()).as_numpy_iterator()
  report = periodic_actions.ReportProgress(num_train_steps=run.total_steps, writer=writer,
                                           every_steps=config.log_every_steps)
  accumulated, pending, tick, since_log, results = None, None, time.time(), 0, None
  for step in range(start_step + 1, run.total_steps + 1):
    state, step_metrics = train_fn(state, sharding.global_batch(next(batches), run.mesh))
    if pending is not None:
      _check_finite(*pending, ckpt)  # The previous step's loss, while this step runs.
    pending = (step_metrics.loss.compute(), step)
    accumulated = step_metrics if accumulated is None else accumulated.merge(step_metrics)
    since_log += 1
    if step == start_step + 1:  # Throughput excludes the compilation of the first step.
      jax.block_until_ready(state.step)
      tick, since_log = time.time(), 0
    report(step)
    final = step == run.total_steps
    if step % config.log_every_steps == 0 or final:
      _check_finite(*pending, ckpt)
      scalars = {f'train_{k}': float(v) for k, v in accumulated.compute().items()}
      if since_log:
        scalars['images_per_sec'] = since_log * config.batch_size / (time.time() - tick)
      writer.write_scalars(step, scalars)
      accumulated, since_log, tick = None, 0, time.time()
    evaluated = None
    if _eval_due(run, step) or final:
      _check_finite(*pending, ckpt)
      evaluated = run_evaluation(run, eval_fn, state.variables, 'final' if final else 'latest',
                                 step)
      writer.write_scalars(step, eval_scalars(evaluated))
      if figures is not None:
        figures.write_images(writer, state.variables, step)
    stop = signals.stop_at(step)
    if evaluated or step % config.checkpoint_every_steps == 0 or stop:
      _check_finite(*pending, ckpt)
      top1 = None if evaluated is None else {'top1': evaluated['fused']['top1']}
      meta = {'step': step, 'eval': top1 and {'split': config.dataset.eval_split, **top1}}
      ckpt.save(step, state, meta, metrics=top1)
    if evaluated:
      tick, since_log = time.time(), 0  # Evaluation time is not training throughput.
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


def _abstract_train_state(run: Run) -> TrainState:
  """The train state's shapes, dtypes and (replicated) shardings, without computing it."""
  size = run.config.dataset.crop_size
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)

  def init():
    variables = run.model.init(jax.random.PRNGKey(0), jnp.zeros(images.shape), train=False)
    tx, _ = create_optimizer(run, variables['params'])
    return steps.create_train_state(variables['params'], variables['batch_stats'], tx)

  replicated = sharding.replicated_sharding(run.mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                      jax.eval_shape(init))


def _finish(run: Run, results: dict) -> None:
  """Writes eval_results.json and tells the user the result and where the outputs are."""
  if run.is_main_process:
    path = os.path.join(run.workdir, 'eval_results.json')
    evaluation.write_json(results, path)
    fused = results['fused']
    print(f'{results["protocol"]["split"]} top-1 (fused: {results["protocol"]["fusion"]}): '
          f'{fused["top1"]:.4f}, top-5 {fused["top5"]:.4f}, loss {fused["loss"]:.4f} on '
          f'{results["num_examples"]} images (checkpoint {results["protocol"]["checkpoint"]}, '
          f'step {results["protocol"]["step"]})', flush=True)
    print(f'outputs in {run.workdir}: eval_results.json, config.json, classes.json, '
          'checkpoints/, TensorBoard events', flush=True)


def check_checkpoint_choice(checkpoint: str) -> None:
  if checkpoint not in ('latest', 'best'):
    raise ConfigError(f'--checkpoint={checkpoint!r} is invalid; allowed: latest, best.')


def load_variables(run: Run, checkpoint: str) -> tuple[dict, str, int]:
  """The variables of init.torch_checkpoint, or of the latest or best checkpoint of the
  workdir, replicated over the mesh; with their source ('torch', 'latest', 'best') and step."""
  config = run.config
  if config.init.torch_checkpoint:
    arrays = convert.load_torch_checkpoint(
        config.init.torch_checkpoint, [g for g in config.init.allowed_globals.split(',') if g])
    variables = convert.torch_to_flax(arrays, run.model, image_size=config.dataset.crop_size)
    source, step = 'torch', 0
  else:
    variables, step = _restore_variables(run, checkpoint)
    source = checkpoint
  return jax.device_put(variables, sharding.replicated_sharding(run.mesh)), source, int(step)


def _restore_variables(run: Run, checkpoint: str) -> tuple[dict, int]:
  """The variables of the workdir's latest or best checkpoint, read without changing the
  directory: a training still running there keeps its checkpoint in progress."""
  directory = os.path.join(run.workdir, 'checkpoints')
  if not os.path.isdir(directory):
    raise UserError(f'no checkpoint in {directory}; train first, or set '
                    '--config.init.torch_checkpoint.')
  # Only the shapes and shardings of the abstract state's variables are used.
  return checkpoints.read_variables(directory, checkpoint,
                                    lambda: _abstract_train_state(run).variables,
                                    ', or set --config.init.torch_checkpoint')


def evaluate(config: Any, workdir: str, checkpoint: str = 'latest') -> dict:
  """Evaluates the latest or best checkpoint of workdir, or init.torch_checkpoint, and
  writes eval_results.json."""
  check_checkpoint_choice(checkpoint)
  run = setup_run(config, workdir, train=False)
  variables, source, step = load_variables(run, checkpoint)
  eval_fn = compile_eval_step(run)
  _write_run_files(run)
  writer = metric_writers.create_default_writer(run.workdir, just_logging=not run.is_main_process)
  results = run_evaluation(run, eval_fn, variables, source, step)
  writer.write_scalars(int(step), eval_scalars(results))
  _finish(run, results)
  writer.flush()
  return results
