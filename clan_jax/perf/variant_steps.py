"""The --variants worker (clan_jax/perf/variants.py plans and drives it): today's train step
and each variant's, built from one initial state and one batch in one process, compiled,
checked against today's, then timed in alternated rounds. The records are rewritten to
spec['json'] after each variant compiles, after the check and after the timing, so that a
killed process leaves what it had measured."""

import functools
import os
import statistics
import time
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clan_jax.models import create_model
from clan_jax.models.factory import resolve_dtype
from clan_jax.perf import op_profile
from clan_jax.perf.step_benchmark import (NUM_CLASSES, OPTIMIZER, cost_analysis, model_flops,
                                          random_batch)
from clan_jax.perf.variants import identity, tolerance, write_records
from clan_jax.train import optim, steps

MEMORY_FIELDS = {'peak_bytes': 'peak_memory_in_bytes', 'temp_bytes': 'temp_size_in_bytes',
                 'argument_bytes': 'argument_size_in_bytes',
                 'output_bytes': 'output_size_in_bytes', 'alias_bytes': 'alias_size_in_bytes',
                 'code_bytes': 'generated_code_size_in_bytes'}


def measure_variants(spec: dict) -> list[dict]:
  """The records of spec['variants'] (today's first), also written to spec['json']."""
  worker = _Worker(spec)
  worker.compile_all()
  worker.check_all()
  worker.time_all()
  if spec.get('profile_steps'):
    _profile(worker.built, worker.by_index, spec)
    worker.save()
  return sorted(worker.records, key=lambda r: r['index'])


class _Worker:
  """One initial state and one batch; the variants' steps built, checked and timed on them."""

  def __init__(self, spec: dict):
    self.spec = spec
    self.records = [identity(spec, v) for v in spec['variants']] + list(spec.get('failed', []))
    self.by_index = {r['index']: r for r in self.records}
    self.device = jax.devices()[0]
    for record in self.records[:len(spec['variants'])]:
      record.update(device=f'{self.device.platform}: {self.device.device_kind}',
                    versions={'jax': jax.__version__},
                    xla_flags=os.environ.get('XLA_FLAGS', ''),  # Flags change the figures.
                    compilation_cache_dir=spec.get('compilation_cache_dir', ''))
    images, labels = random_batch(spec)
    self.batch = jax.device_put({'image': images, 'label': labels})
    size = spec['image_size']
    self.dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    self.today = create_model(spec['variants'][0]['model_fields'], NUM_CLASSES)
    self.variables = jax.jit(functools.partial(self.today.init, train=False))(
        jax.random.PRNGKey(0), self.dummy)
    tx, self.schedules = optim.create_optimizer(
        types.SimpleNamespace(**OPTIMIZER), self.variables['params'], num_classes=NUM_CLASSES,
        batch_size=spec['batch_size'], total_steps=10_000, warmup_steps=0)
    self.tx = optax.chain(_gradient_norm(), tx)  # The check reads the gradient's norm.
    self.initial = steps.create_train_state(self.variables['params'],
                                            self.variables['batch_stats'], self.tx)
    self.built = {}

  def save(self) -> None:
    write_records(self.records, self.spec['json'])

  def compile_all(self) -> None:
    """Each variant's step compiled, or its error recorded (today's error ends the worker)."""
    for variant in self.spec['variants']:
      record = self.by_index[variant['index']]
      record['status'] = 'compiling'
      self.save()
      try:
        model = (create_model(variant['model_fields'], NUM_CLASSES) if variant['index']
                 else self.today)
        _check_same_parameters(model, self.variables, self.dummy)
        self.built[variant['index']] = _compile(model, variant, self.tx, self.schedules,
                                                self.initial, self.batch, record)
      except Exception as error:  # pylint: disable=broad-except  # Recorded; the others go on.
        record.update(status='failed', error=f'{type(error).__name__}: {error}'[:2000])
        if not variant['index']:
          self.save()
          raise
      else:
        record['status'] = 'compiled'
      self.save()

  def check_all(self) -> None:
    """The first step of each from the same state: loss and gradient norm against today's."""
    reference = None
    for index, step in self.built.items():
      self.by_index[index]['status'] = 'checking'
      self.save()
      outcome = step.first_step(self.initial)
      if reference is None:  # Today's; its state takes no further step until all are checked.
        reference = outcome
      _record_check(self.by_index[index], outcome, reference, self.spec)
      self.by_index[index]['status'] = 'checked'
      self.save()

  def time_all(self) -> None:
    """--warmup steps each, then rounds of --steps steps of each variant in turn."""
    for step in self.built.values():
      step.run(self.spec['warmup'])
    times = {index: [] for index in self.built}
    order = list(self.built)
    for round_index in range(self.spec['rounds']):
      shift = round_index % len(order)  # Each variant takes each place in the round in turn.
      for index in order[shift:] + order[:shift]:
        times[index] += self.built[index].timed(self.spec['steps'])
    for index, step_times in times.items():
      _record_times(self.by_index[index], step_times, times[0], self.spec)
    if self.device.platform != 'cpu':  # One figure for the process: every variant's buffers.
      self.by_index[0]['process_peak_bytes_in_use'] = (
          self.device.memory_stats() or {}).get('peak_bytes_in_use')
    self.save()


def _gradient_norm() -> optax.GradientTransformation:
  """Passes the updates through; its state keeps their global norm (the gradient's, first in
  the chain): one reduction over the parameters, the same in every variant's step."""
  def init(params):
    del params
    return {'gradient_norm': jnp.zeros((), jnp.float32)}

  def update(updates, state, params=None):
    del state, params
    return updates, {'gradient_norm': optax.tree.norm(updates).astype(jnp.float32)}

  return optax.GradientTransformation(init, update)


def _check_same_parameters(model, variables: dict, dummy: jax.Array) -> None:
  """Every variant starts from today's state: its parameter tree must be today's."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                          dummy)
  ours = _shape_map(shapes)
  today = _shape_map(variables)
  if ours != today:
    differ = sorted(set(ours.items()) ^ set(today.items()))[:4]
    raise ValueError(f'its variables differ from today\'s (shape, dtype by path; first: '
                     f'{differ}): a variant must keep the parameters.')


def _shape_map(tree: Any) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in leaves}


class _Step:
  """A variant's compiled step and its own state (donated at every call)."""

  def __init__(self, compiled, batch):
    self.compiled, self.batch, self.state = compiled, batch, None
    self.hlo_text = compiled.as_text

  def first_step(self, initial) -> dict:
    """One step from a copy of `initial`: the check's figures; the state goes on from it."""
    params = initial.params
    self.state, scalars = self.compiled(_copy(initial), self.batch)
    return {'loss': float(scalars['loss']),
            'gradient_norm': float(self.state.opt_state[0]['gradient_norm']),
            'params_before': params, 'params_after': self.state.params}

  def __call__(self) -> None:
    self.state, scalars = self.compiled(self.state, self.batch)
    jax.block_until_ready(scalars['loss'])

  def run(self, count: int) -> None:
    for _ in range(count):
      self()

  def timed(self, count: int) -> list[float]:
    times = []
    for _ in range(count):
      start = time.perf_counter()
      self()
      times.append(time.perf_counter() - start)
    return times


def _compile(model, variant: dict, tx, schedules, initial, batch, record: dict) -> _Step:
  fields = variant['model_fields']
  fn = jax.jit(functools.partial(steps.train_step, model, tx, schedules,
                                 fields['head_loss_weights'], OPTIMIZER['label_smoothing']),
               donate_argnums=0)
  start = time.perf_counter()
  lowered = fn.lower(initial, batch)
  compiled = lowered.compile()
  record['compile_s'] = time.perf_counter() - start
  record['computes_in'] = resolve_dtype(fields['dtype'])
  record['flops_per_step'] = model_flops(lowered)
  analysis = cost_analysis(compiled)
  record['compiled_flops'] = analysis.get('flops')
  record['compiled_bytes_accessed'] = analysis.get('bytes accessed')
  memory = compiled.memory_analysis()
  for key, attribute in MEMORY_FIELDS.items():
    value = getattr(memory, attribute, None) if memory is not None else None
    if value is not None:
      record[key] = int(value)
  if all(key in record for key in ('argument_bytes', 'output_bytes', 'alias_bytes')):
    # XLA:CPU's peak leaves the temporaries out (measured: about the arguments' size alone).
    record['footprint_bytes'] = (record['argument_bytes'] + record['output_bytes']
                                 - record['alias_bytes'] + record.get('temp_bytes', 0))
  return _Step(compiled, batch)


@jax.jit
def _copy(tree: Any) -> Any:
  """New buffers for a state that a step will donate: one compiled copy of the whole tree."""
  return jax.tree.map(jnp.copy, tree)


@jax.jit
def _update_difference(before, today_after, variant_after) -> jax.Array:
  """|variant's first update - today's| / |today's|, over all parameters."""
  difference = optax.tree.norm(jax.tree.map(lambda v, t: v.astype(jnp.float32) - t,
                                            variant_after, today_after))
  update = optax.tree.norm(jax.tree.map(lambda t, b: t.astype(jnp.float32) - b,
                                        today_after, before))
  return difference / jnp.maximum(update, 1e-30)


def _record_check(record: dict, outcome: dict, reference: dict, spec: dict) -> None:
  for key, name in (('loss', 'loss'), ('gradient_norm', 'grad_norm')):
    record[name] = outcome[key]
    record[f'{name}_rel_diff'] = _relative(outcome[key], reference[key])
  record['update_rel_diff'] = float(_update_difference(
      reference['params_before'], reference['params_after'], outcome['params_after']))
  limit = tolerance((record['computes_in'], resolve_dtype(spec['variants'][0]['model_fields']
                                                          ['dtype'])))
  record['check_tolerance'] = limit
  record['check_passed'] = bool(record['loss_rel_diff'] <= limit
                                and record['grad_norm_rel_diff'] <= limit)


def _relative(value: float, reference: float) -> float:
  if not (np.isfinite(value) and np.isfinite(reference)):
    return float('inf')
  return abs(value - reference) / max(abs(reference), 1e-30)


def _record_times(record: dict, times: list[float], today: list[float], spec: dict) -> None:
  median, fastest = statistics.median(times), min(times)
  record.update(status='done', step_time_s=median, step_time_min_s=fastest,
                step_time_max_s=max(times), steps=len(times), rounds=spec['rounds'],
                images_per_sec=spec['batch_size'] / median,
                speedup=statistics.median(today) / median, speedup_min=min(today) / fastest)
  if record.get('flops_per_step'):
    record['tflops'] = record['flops_per_step'] / median / 1e12
    if spec.get('peak_tflops'):
      record['mfu'] = record['tflops'] / spec['peak_tflops']


def _profile(built: dict[int, _Step], by_index: dict, spec: dict) -> None:
  """Today's and the fastest variant that passed its check: where their time goes."""
  passed = [i for i in built if i and by_index[i].get('check_passed')]
  best = max(passed, key=lambda i: by_index[i]['speedup'], default=None)
  for index in [0] + ([best] if best is not None else []):
    logdir = spec.get('profile_dir') and f'{spec["profile_dir"]}/variant_{index}'
    try:
      by_index[index]['op_profile'] = op_profile.profile(
          built[index], built[index].hlo_text(), spec['profile_steps'], logdir=logdir or None,
          peak_gbps=spec.get('peak_gbps') or None)
    except Exception as error:  # pylint: disable=broad-except  # The timing stands.
      by_index[index]['op_profile_error'] = f'{type(error).__name__}: {error}'
