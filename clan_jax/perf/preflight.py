"""--mode=preflight: a broken run caught in minutes on a CPU, before any GPU hour is spent.

    python main.py --config=configs/cub.py --workdir=runs/cub --mode=preflight

Prints the splits against the official figures and the initial weights (the short form every
training run logs: clan_jax/train/preflight.py), the ImageNet check of the weights and the input
pipeline (clan_jax/train/imagenet_check.py), and the time and memory of a few training steps on
the present devices with the projected time of the run. On a CPU the steps run at a small batch,
and the projection scales them to the configured one. A failed ImageNet check skips the
timing and raises PreflightError after the report (docs/TRAINING.md, Preflight). Nothing is
written to --workdir (created if missing, as training does).
"""

import dataclasses
import functools
import logging
import resource
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clan_jax.base.errors import UserError
from clan_jax.base.text import format_duration
from clan_jax.perf.step_benchmark import time_steps
from clan_jax.train import imagenet_check, loop, sharding
from clan_jax.train.preflight import PreflightError, Section, data_section, weights_section
from clan_jax.train.setup import Run, initial_training_variables, new_train_state, setup_run

CPU_BATCH_SIZE = 2  # Per CPU device count at least: a step of the configured batch is minutes.
LIKELY_CAUSES = ('Likely causes: the weights file (not an ImageNet-1k ResNet of model.depth), '
                 'the channel order, the normalisation, or the image decode or resize. The '
                 'report is above; docs/TRAINING.md, Preflight.')


@dataclasses.dataclass
class StepTiming:
  platform: str
  device_kind: str
  devices: int
  batch_size: int
  configured_batch_size: int
  image_size: int
  first_s: float  # The first step, compilation included.
  step_s: float  # The median of the timed steps.
  steps: int
  peak_memory_bytes: int
  memory_kind: str
  total_steps: int
  weights_error: str = ''  # Why the run's initial weights failed (timed with random ones).

  @property
  def projected_s(self) -> float:
    return self.total_steps * self.step_s * self.configured_batch_size / self.batch_size

  def section(self) -> Section:
    small = self.batch_size != self.configured_batch_size
    batch = (f'batch {self.batch_size} (a small batch on the CPU; configured: '
             f'{self.configured_batch_size})' if small else f'batch {self.batch_size}')
    scaled = (f' x {self.configured_batch_size}/{self.batch_size} (scaled linearly from the '
              f'measured batch {self.batch_size})' if small else '')
    lines = [f'step time on {self.devices} x {self.platform} ({self.device_kind}), {batch}, '
             f'{self.image_size} px',
             f'  first step (compilation included) {self.first_s:.1f} s; {self.steps} timed: '
             f'median {self.step_s:.3f} s/step, {self.batch_size / self.step_s:.1f} images/s',
             f'  peak memory: {self.peak_memory_bytes / 2**30:.2f} GiB ({self.memory_kind})',
             f'  projected training time: {self.total_steps:,} steps x {self.step_s:.3f} s'
             f'{scaled} = {format_duration(self.projected_s)}; evaluations and the input '
             'pipeline add to it']
    if self.weights_error:
      lines.append(f'  !!! FAILED: timed with random weights: the initial weights failed: '
                   f'{self.weights_error}')
    return Section(lines, [])


def timing_batch_size(platform: str, configured: int, devices: int) -> int:
  """The configured batch on accelerators; on a CPU, a small one (one example per device,
  CPU_BATCH_SIZE at least) unless the configured one is smaller."""
  if platform != 'cpu':
    return configured
  return min(configured, max(devices, CPU_BATCH_SIZE))


def _peak_memory(device) -> tuple[int, str]:
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), f'{device.platform} device 0, since the start'
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB.
  return rss, 'host, peak resident memory of the process'


def _run_variables(run: Run) -> tuple[dict, str]:
  """The run's initial variables, or random ones and why the run's own failed."""
  try:
    return initial_training_variables(run), ''
  except UserError as e:  # Timing needs no particular weights; the report names the problem.
    size = run.config.dataset.crop_size
    variables = jax.jit(functools.partial(run.model.init, train=False))(
        jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3), jnp.float32))
    return variables, str(e)


def measure_steps(run: Run) -> StepTiming:
  """Times preflight.timing_steps training steps after the compiled first one: the run's
  model, optimizer and jitted step (loop.compile_steps), a random batch."""
  device = run.mesh.devices.flat[0]
  batch_size = timing_batch_size(device.platform, run.config.batch_size, run.mesh.size)
  variables, weights_error = _run_variables(run)
  state, tx, schedules = new_train_state(run, variables)
  train_fn, _ = loop.compile_steps(run, tx, schedules)
  rng = np.random.default_rng(0)
  local, size = batch_size // jax.process_count(), run.config.dataset.crop_size
  batch = sharding.global_batch({
      'image': rng.integers(0, 256, (local, size, size, 3), dtype=np.uint8),
      'label': rng.integers(0, run.num_classes, local).astype(np.int32)}, run.mesh)
  holder = [state]

  def step():
    holder[0], metrics = train_fn(holder[0], batch)
    jax.block_until_ready(metrics)

  first, times = time_steps(step, run.config.preflight.timing_steps, warmup=0)
  memory, memory_kind = _peak_memory(device)
  return StepTiming(device.platform, device.device_kind, run.mesh.size, batch_size,
                    run.config.batch_size, size, first, float(np.median(times)), len(times),
                    memory, memory_kind, run.total_steps, weights_error)


def _without_cache(config: Any) -> Any:
  """The config with dataset.cache off: the cache changes only speed, and filling it takes
  minutes on a real dataset."""
  config = config.copy_and_resolve_references()
  config.dataset.cache = False
  return config


def run_preflight(config: Any, workdir: str) -> list[Section]:
  """Prints the preflight's report (process 0) and returns its sections; raises
  PreflightError, after the report, when a check failed."""
  run = setup_run(_without_cache(config), workdir, train=True)
  check = imagenet_check.run_imagenet_check(run.config, run.train_data)
  sections = [Section(['preflight:'], []), data_section(run), weights_section(run.config),
              check.section()]
  problems = list(check.problems)
  if problems:  # Minutes on a CPU, for a run that must change first.
    sections.append(Section(['step time: not measured: the check above failed.'], []))
  else:
    logging.info('timing %d training steps', run.config.preflight.timing_steps)
    timing = measure_steps(run)
    sections.append(timing.section())
    if timing.weights_error:
      problems.append(f'the initial weights: {timing.weights_error}')
  if run.is_main_process:
    print('\n'.join(section.text() for section in sections), flush=True)
  if problems:
    causes = f' {LIKELY_CAUSES}' if check.problems else ''
    raise PreflightError(f'preflight failed: {"; ".join(problems)}.{causes}')
  return sections
