"""A run, set up before anything compiles: the config checked, the data loaded (built if
needed), the model, the optimizer, the initial or restored train state, the run's files.
Everything that can fail because of the user's input fails here (docs/TRAINING.md)."""

import dataclasses
import datetime
import functools
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from clan_jax.base import workdirs
from clan_jax.base.errors import ConfigError
from clan_jax.base.files import write_json
from clan_jax.config.validation import validate_config, validate_training_start
from clan_jax.datasets import input_pipeline
from clan_jax.models import create_model
from clan_jax.models.factory import resolve_dtype
from clan_jax.pytorch.conversion import load_torch_checkpoint, torch_to_flax
from clan_jax.train import checkpoints, distributed, optim, sharding, steps
from clan_jax.train.steps import TrainState


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
  dtype: str = 'float32'  # The compute dtype model.dtype resolves to ('auto': the platform's).
  # The split the best checkpoint is chosen on ('': none, the eval split then), training only.
  val_split: str = ''
  val_data: Optional[input_pipeline.SplitData] = None

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


def setup_run(config: Any, workdir: str, *, train: bool,
              claim_workdir: Optional[Callable[[str], Any]] = None) -> Run:
  """Validates the config, loads (building if needed) the data, builds the model.
  `claim_workdir(path)` (training: its lock) runs in process 0 once the workdir is known
  writable, before the data loads, so that a busy workdir fails at once."""
  validate_config(config)
  if train:
    validate_training_start(config)
  if not workdir:
    raise ConfigError('--workdir is required: the folder for checkpoints, metrics and results.')
  # Before the data loads, a bad folder fails at once. Process 0 alone writes the run's files
  # (the others write only under checkpoints/, which TrainCheckpoints checks in each).
  if train:
    workdirs.check_training_workdir(workdir)
  if (train or os.path.exists(workdir)) and distributed.is_main_process():
    checkpoints.ensure_writable_folder(os.path.abspath(workdir), '--workdir')
    if claim_workdir is not None:
      claim_workdir(os.path.abspath(workdir))
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
  val_split, val_data = '', None
  if train:
    val_split, val_data = _load_val_split(dataset, eval_data.dataset_splits, build)
  class_names = eval_data.class_names
  if dataset.num_classes and dataset.num_classes != len(class_names):
    raise ConfigError(f'dataset.num_classes={dataset.num_classes} but the dataset has '
                      f'{len(class_names)} classes; set it to 0 (from the dataset).')
  steps_per_epoch = input_pipeline.steps_per_epoch(
      train_data.num_examples if train_data else 1, config.batch_size)
  total_steps = run_length(config, steps_per_epoch)
  model = create_model(config.model, len(class_names))
  return Run(config, os.path.abspath(workdir), mesh, model, class_names, train_data, eval_data,
             steps_per_epoch, total_steps, dtype=resolve_dtype(config.model.dtype),
             val_split=val_split, val_data=val_data)


def run_length(config: Any, steps_per_epoch: int) -> int:
  """The run's total steps: num_train_steps when set, else num_epochs of steps_per_epoch."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(config.num_epochs * steps_per_epoch)


def _load_val_split(dataset: Any, available: tuple[str, ...],
                    build: bool) -> tuple[str, Optional[input_pipeline.SplitData]]:
  """dataset.val_split resolved against the built dataset's splits, and its data ('', None
  when there is none or it is the eval split itself: the best is then chosen on eval_split)."""
  split = input_pipeline.resolve_val_split(dataset, available)
  if not split or split == dataset.eval_split:
    return '', None
  if split == dataset.train_split:
    logging.warning('dataset.val_split=%r is the training split: the best checkpoint will be '
                    'the one that fits the training images best, not a held-out choice.', split)
  return split, input_pipeline.load_split(dataset, split, build=build)


def optimizer_for_run(run: Run, params: Any):
  """The optimizer and learning-rate schedules of the run's config, length and classes."""
  warmup = int(round(run.config.optimizer.warmup_epochs * run.steps_per_epoch))
  return optim.create_optimizer(run.config.optimizer, params, num_classes=run.num_classes,
                                batch_size=run.config.batch_size, total_steps=run.total_steps,
                                warmup_steps=warmup)


def initial_training_variables(run: Run) -> dict:
  """Initialised variables, with the weights of init.torch_checkpoint or init.checkpoint."""
  init = run.config.init
  size = run.config.dataset.crop_size
  rng = jax.random.PRNGKey(run.config.seed)
  if init.torch_checkpoint:
    arrays = load_torch_checkpoint(
        init.torch_checkpoint, [g for g in init.allowed_globals.split(',') if g])
    logging.info('initialising from %s (%s)', init.torch_checkpoint,
                 'backbone only' if init.torch_backbone_only else 'whole model')
    return torch_to_flax(arrays, run.model, image_size=size,
                         backbone_only=init.torch_backbone_only, rng=rng)
  # Logged before the initialiser compiles: up to a minute on a CPU without another line.
  if init.checkpoint:
    logging.info('initialising from %s', init.checkpoint)
  else:  # validate_training_start allowed it: init.from_scratch=True, or synthetic data.
    logging.info('initialising from random weights (seed %d), no ImageNet backbone',
                 run.config.seed)
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  variables = jax.jit(functools.partial(run.model.init, train=False))(rng, images)
  if init.checkpoint:
    variables = checkpoints.load_variables_checkpoint_like(
        init.checkpoint, variables, f'init.checkpoint={init.checkpoint}')
  return variables


def new_train_state(run: Run, variables: dict) -> tuple[TrainState, Any, dict]:
  """A train state from `variables`, replicated over the mesh, with its optimizer."""
  tx, schedules = optimizer_for_run(run, variables['params'])
  state = steps.create_train_state(variables['params'], variables['batch_stats'], tx)
  return jax.device_put(state, sharding.replicated_sharding(run.mesh)), tx, schedules


def abstract_train_state(run: Run) -> TrainState:
  """The train state's shapes, dtypes and (replicated) shardings, without computing it."""
  size = run.config.dataset.crop_size
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)

  def init():
    variables = run.model.init(jax.random.PRNGKey(0), jnp.zeros(images.shape), train=False)
    tx, _ = optimizer_for_run(run, variables['params'])
    return steps.create_train_state(variables['params'], variables['batch_stats'], tx)

  replicated = sharding.replicated_sharding(run.mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                      jax.eval_shape(init))


def write_run_files(run: Run) -> None:
  """config.json (the resolved config) and classes.json; an older differing config is kept.
  A training run (train_data set) also adds its start to run_info.json. An evaluation writes
  only the files a workdir lacks: those present are its training's."""
  if not run.is_main_process:
    return
  os.makedirs(run.workdir, exist_ok=True)
  training = run.train_data is not None
  config_path = os.path.join(run.workdir, 'config.json')
  if training or not os.path.exists(config_path):
    _write_config(run.config, config_path)
  classes_path = os.path.join(run.workdir, 'classes.json')
  if training or not os.path.exists(classes_path):
    write_json({'classes': run.class_names}, classes_path)
  if training:
    _add_run_start(os.path.join(run.workdir, RUN_INFO_FILE))


def _write_config(config: Any, path: str) -> None:
  resolved = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous != resolved:
      kept = os.path.join(os.path.dirname(path), f'config.{int(time.time())}.json')
      os.replace(path, kept)
      logging.warning('the config differs from this workdir\'s config.json; the old one is '
                      'kept as %s', kept)
  write_json(resolved, path)


# run_info.json: what each start of a training run ran, where and how.
RUN_INFO_FILE = 'run_info.json'
CODE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Distributions whose versions a run records (torch only when already imported).
RECORDED_PACKAGES = ('clan-jax', 'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint',
                     'tensorflow', 'tensorflow-cpu', 'tensorflow-datasets', 'clu', 'numpy',
                     'ml-collections')


def _add_run_start(path: str) -> None:
  """Appends this start to run_info.json's list, so a resumed run keeps every earlier start
  (an unreadable file is set aside, not lost)."""
  starts = []
  if os.path.exists(path):
    try:
      with open(path) as f:
        starts = list(json.load(f)['starts'])
    except (OSError, ValueError, KeyError, TypeError) as e:
      kept = f'{path}.{int(time.time())}.unreadable'
      os.replace(path, kept)
      logging.warning('%s cannot be read (%s); it is kept as %s', path, e, kept)
  write_json({'starts': starts + [run_start_record()]}, path)


def run_start_record() -> dict:
  """This process's start: date, command line, code, package versions, devices, processes."""
  devices = jax.devices()
  return {
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'command': list(sys.argv),
      'code': _git_state(CODE_ROOT),
      'versions': _package_versions(),
      'devices': {'platform': devices[0].platform, 'kind': devices[0].device_kind,
                  'count': len(devices), 'local_count': jax.local_device_count()},
      'processes': {'count': jax.process_count(), 'index': jax.process_index()},
  }


def _package_versions() -> dict[str, str]:
  versions = {'python': platform.python_version()}
  for name in RECORDED_PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass  # Not installed (e.g. tensorflow when tensorflow-cpu is).
  torch = sys.modules.get('torch')  # Importing torch here would cost seconds and memory.
  if torch is not None:
    versions['torch'] = str(getattr(torch, '__version__', 'unknown'))
  return versions


def _git_state(root: str) -> Optional[dict]:
  """{'commit', 'dirty'} of the checkout whose top folder is `root`; None without one (an
  installed package, no git). Untracked files (a workdir inside the checkout) are not dirt."""
  def git(*args: str) -> str:
    return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()

  try:
    if os.path.realpath(git('rev-parse', '--show-toplevel')) != os.path.realpath(root):
      return None  # The package lies inside some other repository (e.g. a venv in one).
    return {'commit': git('rev-parse', 'HEAD'),
            'dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}
  except (OSError, subprocess.SubprocessError):
    return None
