"""The step benchmark's library (the command: clan_jax/benchmark.py, which documents the
measurements): JAX's and the PyTorch twin's train and eval steps built on in-memory batches,
timed, and their records combined into tables. Imports no TFDS, TensorFlow, clu or
ml_collections, so that it runs on a bare GPU image; JAX and torch load in the worker that
measures them."""

import dataclasses
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from typing import Callable, Optional

import numpy as np

from clan_jax.datasets.preprocess import normalize
from clan_jax.models.fields import ModelConfig
from clan_jax.perf import op_profile

# configs/default.py's model section: ModelConfig's defaults.
MODEL_DEFAULTS = dataclasses.asdict(ModelConfig())
OPTIMIZER = dict(name='sgd', learning_rate=0.01, backbone_learning_rate=0.001,
                 base_batch_size=16, momentum=0.9, weight_decay=5e-4, decay_norm_and_bias=True,
                 grad_clip_norm=0.0, label_smoothing=0.0)
NUM_CLASSES = 200  # CUB's.
# The model's implementation switches (the same function and parameters either way).
SWITCHES = ('conv1x1_as_matmul', 'attention_impl', 'clca_order', 'remat')
TORCH_VARIANTS = ('eager', 'channels_last', 'amp_bf16', 'compile')
EAGER_VARIANTS = ('eager', 'channels_last', 'amp_bf16')
COST_MODELS = ('clan', 'resnet')  # --clan_cost: CLAN's step time over ResNet's.


# ---------------------------------------------------------------------- measurements

def model_config(spec: dict) -> types.SimpleNamespace:
  switches = {k: spec[k] for k in SWITCHES if k in spec}
  return types.SimpleNamespace(**{**MODEL_DEFAULTS, 'name': spec['model'],
                                  'depth': spec['depth'], 'dtype': spec['dtype'], **switches})


def use_compilation_cache(path: str) -> None:
  """JAX's persistent compilation cache in `path`, for every compilation however short. JAX
  keeps XLA's GPU autotuning results there too (jax_persistent_cache_enable_xla_caches), so a
  second process skips both the compile and the autotuning of a step it has seen."""
  import jax  # Late: the parent process must not import JAX; the worker measuring it does.

  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)  # Every size, too.


def time_steps(step: Callable[[], None], steps: int, warmup: int) -> tuple[float, list[float]]:
  """(first call in s, [timed step in s]); `step` must block until its work is done."""
  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return first, times


def random_batch(spec: dict):
  rng = np.random.default_rng(0)
  size, batch = spec['image_size'], spec['batch_size']
  return (rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
          rng.integers(0, NUM_CLASSES, batch).astype(np.int32))


def cost_analysis(stage) -> dict:
  """XLA's cost analysis of a lowered or compiled step as one dict ({} if none): older
  versions return one dict per computation."""
  analysis = stage.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return analysis or {}


def model_flops(lowered) -> Optional[float]:
  """FLOPs of a step from XLA's cost analysis of the lowered (not yet optimised) HLO: the
  model's FLOPs whatever the backend. The compiled executable's analysis is not that: on a
  GPU it leaves out the convolutions that became cuDNN calls (BENCHMARKS.md, the GPU
  section)."""
  flops = cost_analysis(lowered).get('flops')
  return float(flops) if flops and flops > 0 else None


def measure_jax(spec: dict) -> dict:
  step, finish, compiled = build_jax_step(spec)
  _, times = time_steps(step, spec['steps'], spec['warmup'])
  record = finish(times)
  if spec.get('profile_steps'):  # After the timed steps: tracing slows the steps it sees.
    try:
      record['op_profile'] = op_profile.profile(step, compiled.as_text(),
                                                spec['profile_steps'],
                                                logdir=spec.get('profile_dir') or None,
                                                peak_gbps=spec.get('peak_gbps') or None)
    except Exception as error:  # pylint: disable=broad-except  # The timing stands.
      record['op_profile_error'] = f'{type(error).__name__}: {error}'
      print(f'the profile failed: {record["op_profile_error"]}', file=sys.stderr)
  return record


def build_jax_step(spec: dict):
  """(step, finish, compiled): the jitted step over a mesh of spec['devices'] devices
  (default 1), the batch sharded over 'data', the state replicated and donated, as
  clan_jax.train.loop compiles it (compiled here); finish(step times in s) makes the record."""
  import jax  # Late: the parent process must not import JAX; the worker measuring it does.
  import jax.numpy as jnp  # Late: as jax.

  from clan_jax.models import create_model  # Late: imports JAX.
  from clan_jax.train import optim, sharding, steps  # Late: import JAX.

  model = create_model(model_config(spec), NUM_CLASSES)
  mesh = sharding.create_mesh(jax.devices()[:spec.get('devices', 1)])
  replicated, data = sharding.replicated_sharding(mesh), sharding.data_sharding(mesh)
  images, labels = random_batch(spec)
  batch = jax.device_put({'image': images, 'label': labels}, data)
  size = spec['image_size']
  variables = jax.device_put(jax.jit(functools.partial(model.init, train=False))(
      jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3), jnp.float32)), replicated)
  if spec['mode'] == 'train':
    tx, schedules = optim.create_optimizer(
        types.SimpleNamespace(**OPTIMIZER), variables['params'], num_classes=NUM_CLASSES,
        batch_size=spec['batch_size'], total_steps=10_000, warmup_steps=0)
    state = steps.create_train_state(variables['params'], variables['batch_stats'], tx)
    fn = jax.jit(functools.partial(steps.train_step, model, tx, schedules,
                                   MODEL_DEFAULTS['head_loss_weights'],
                                   OPTIMIZER['label_smoothing']),
                 in_shardings=(replicated, data), out_shardings=replicated, donate_argnums=0)
    args = [state, batch]

    def step():
      args[0], scalars = compiled(*args)
      jax.block_until_ready(scalars['loss'])
  else:
    fn = jax.jit(lambda v, x: model.apply(v, normalize(x), train=False)['logits'],
                 in_shardings=(replicated, data), out_shardings=data)
    args = [variables, batch['image']]

    def step():
      jax.block_until_ready(compiled(*args))

  start = time.perf_counter()
  lowered = fn.lower(*args)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start

  def finish(times: list[float]) -> dict:
    record = _record(spec, 'jax', jax_variant(spec), spec['dtype'], times, compile_s)
    device = mesh.devices.flat[0]
    record.update(flops_per_step=model_flops(lowered), devices=mesh.size,
                  device=f'{device.platform}: {device.device_kind}',
                  versions={'jax': jax.__version__},
                  xla_flags=os.environ.get('XLA_FLAGS', ''))  # Flags change the figures.
    if device.platform in ('gpu', 'cuda'):
      stats = device.memory_stats() or {}
      record.update(peak_memory_bytes=stats.get('peak_bytes_in_use'), memory_kind='device')
    else:
      record.update(peak_memory_bytes=_peak_rss(), memory_kind='host_rss')
    return record

  return step, finish, compiled


def jax_variant(spec: dict) -> str:
  """'xla', the implementation switches that differ from the defaults, and the devices."""
  changed = [f'{k}={spec[k]}' for k in SWITCHES if k in spec and spec[k] != MODEL_DEFAULTS[k]]
  if spec.get('host_devices'):
    changed.append(f'{spec["devices"]} host devices')
  return ','.join(changed) or 'xla'


def measure_torch(spec: dict) -> dict:
  step, finish = build_torch_step(spec)
  first, times = time_steps(step, spec['steps'], spec['warmup'])
  return finish(times, first)


def build_torch_step(spec: dict):
  """(step, finish): the twin's step in spec['variant']; finish(step times in s, first call
  in s) makes the record."""
  import torch  # Late: torch is an optional extra, imported by the worker that measures it.

  from clan_jax.pytorch import twin  # Late: imports torch.

  cuda = torch.cuda.is_available()
  device = torch.device('cuda' if cuda else 'cpu')
  torch.backends.cudnn.benchmark = True  # Fixed shapes: let cuDNN pick its fastest kernels.
  variant = spec['variant']
  channels_last = variant != 'eager'
  autocast = variant == 'amp_bf16' or (variant == 'compile' and spec['dtype'] == 'bfloat16')
  torch.manual_seed(0)
  net = twin.create_torch_model(model_config(spec), NUM_CLASSES).to(device)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  net = net.to(memory_format=memory_format)
  forward = torch.compile(net) if variant == 'compile' else net
  images_np, labels_np = random_batch(spec)
  images = torch.from_numpy(np.ascontiguousarray(images_np)).to(device)
  labels = torch.from_numpy(labels_np).long().to(device)
  mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
  std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255

  def inputs():  # uint8 NHWC -> normalised float NCHW, on the device, as in the JAX step.
    x = (images.permute(0, 3, 1, 2).float() - mean) / std
    return x.contiguous(memory_format=memory_format)

  def autocast_context():
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)

  sync = torch.cuda.synchronize if cuda else (lambda: None)
  if spec['mode'] == 'train':
    net.train()
    optimizer, scheduler = twin.create_torch_optimizer(
        net, types.SimpleNamespace(**OPTIMIZER), num_classes=NUM_CLASSES,
        batch_size=spec['batch_size'], total_steps=10_000, warmup_steps=0)

    def step():
      optimizer.zero_grad(set_to_none=True)
      with autocast_context():
        outputs = forward(inputs())
        loss, _ = twin.multi_head_loss(
            outputs, labels, MODEL_DEFAULTS['head_loss_weights'], OPTIMIZER['label_smoothing'])
      loss.backward()
      optimizer.step()
      scheduler.step()
      loss.item()  # Synchronises, as the JAX step's block_until_ready.
      sync()
  else:
    net.eval()

    def step():
      with torch.inference_mode(), autocast_context():
        forward(inputs())['logits']
      sync()

  if cuda:
    torch.cuda.reset_peak_memory_stats()

  def finish(times: list[float], first: float) -> dict:
    record = _record(spec, 'torch', variant, 'bfloat16' if autocast else 'float32', times, first)
    record['device'] = (f'cuda: {torch.cuda.get_device_name()}' if cuda
                        else f'cpu: {platform.processor() or platform.machine()}')
    record['versions'] = {'torch': torch.__version__}
    record['torch_threads'] = torch.get_num_threads()
    if cuda:
      record.update(peak_memory_bytes=torch.cuda.max_memory_allocated(), memory_kind='device')
    else:
      record.update(peak_memory_bytes=_peak_rss(), memory_kind='host_rss')
    return record

  return step, finish


def measure_clan_cost(spec: dict) -> list[dict]:
  """CLAN and the plain ResNet of the same depth in one process, their steps alternated
  (the order flipped every round), so that a slow spell of a shared machine hits both:
  [CLAN's record, ResNet's], each with `clan_cost`, CLAN's median step time over ResNet's,
  and `clan_cost_min`, the ratio of their fastest steps (a shared machine's noise only adds
  time). Peak memory is left out: it would be both models'."""
  finishes, steps_of, firsts, times = {}, {}, {}, {}
  for model in COST_MODELS:
    model_spec = {**spec, 'model': model}
    if spec['framework'] == 'jax':
      model_spec['variant'] = jax_variant(model_spec)
      steps_of[model], finish, _ = build_jax_step(model_spec)
      finishes[model] = lambda t, first, finish=finish: finish(t)
    else:
      steps_of[model], finishes[model] = build_torch_step(model_spec)
    firsts[model], _ = time_steps(steps_of[model], 0, spec['warmup'])
    times[model] = []
  for round_index in range(spec['steps']):
    for model in COST_MODELS[::1 if round_index % 2 == 0 else -1]:
      start = time.perf_counter()
      steps_of[model]()
      times[model].append(time.perf_counter() - start)
  records = [finishes[model](times[model], firsts[model]) for model in COST_MODELS]
  cost = records[0]['step_time_s'] / records[1]['step_time_s']
  cost_min = records[0]['step_time_min_s'] / records[1]['step_time_min_s']
  for record in records:
    record.update(clan_cost=cost, clan_cost_min=cost_min, interleaved=True,
                  peak_memory_bytes=None)
  return records


def _peak_rss() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB.


def _record(spec: dict, framework: str, variant: str, dtype: str, times: list[float],
            compile_s: float) -> dict:
  median = statistics.median(times)
  return {'framework': framework, 'variant': variant, 'model': spec['model'],
          'depth': spec['depth'], 'mode': spec['mode'], 'image_size': spec['image_size'],
          'batch_size': spec['batch_size'], 'dtype': dtype,
          'images_per_sec': spec['batch_size'] / median, 'step_time_s': median,
          'step_time_min_s': min(times), 'step_time_max_s': max(times), 'steps': len(times),
          'compile_s': compile_s}


# -------------------------------------------------------------------------- the driver

def planned_runs(frameworks, modes, torch_variants, *, gpu: bool,
                 torch_compile: bool) -> list[tuple[str, str, str]]:
  """(framework, variant, mode) of every record, JAX first."""
  if not torch_variants:
    torch_variants = ['eager', 'channels_last']
    if gpu:
      torch_variants += ['amp_bf16', 'compile']
    elif torch_compile:
      torch_variants.append('compile')
  runs = []
  for mode in modes:
    if 'jax' in frameworks:
      runs.append(('jax', 'xla', mode))
    if 'torch' in frameworks:
      runs += [('torch', variant, mode) for variant in torch_variants]
  return runs


def run_worker(spec: dict) -> dict:
  """One measurement in a fresh interpreter; its last stdout line is the record."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  if spec.get('host_devices'):  # XLA reads the device count once, at start-up.
    env['XLA_FLAGS'] = (f'{env.get("XLA_FLAGS", "")} '
                        f'--xla_force_host_platform_device_count={spec["devices"]}').strip()
    env['JAX_PLATFORMS'] = 'cpu'
  cmd = [sys.executable, '-m', 'clan_jax.benchmark', f'--worker={json.dumps(spec)}']
  done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
  lines = done.stdout.strip().splitlines()
  if done.returncode or not lines:
    identity = _identity(spec) if 'framework' in spec else {'kind': spec.get('kind')}
    return {**identity, 'error': f'exit status {done.returncode} (its stderr is above)'}
  return json.loads(lines[-1])


def _identity(spec: dict) -> dict:
  return {'framework': spec['framework'], 'variant': spec['variant'], 'model': spec['model'],
          'depth': spec['depth'], 'mode': spec['mode'], 'image_size': spec['image_size'],
          'batch_size': spec['batch_size'], 'dtype': spec['dtype']}


def median_record(records: list[dict]) -> dict:
  """The run with the median images/s, with every run's figure alongside."""
  good = [r for r in records if 'error' not in r]
  if not good:
    return records[0]
  ranked = sorted(good, key=lambda r: r['images_per_sec'])
  chosen = dict(ranked[(len(ranked) - 1) // 2])
  chosen['images_per_sec_runs'] = [r['images_per_sec'] for r in good]
  return chosen


def median_cost_run(runs: list) -> list[dict]:
  """The --clan_cost run with the median ratio (its two records), every run's ratio alongside."""
  good = [run for run in runs if isinstance(run, list)]
  if not good:
    return [runs[0]]
  ranked = sorted(good, key=lambda run: run[0]['clan_cost'])
  chosen = [dict(record) for record in ranked[(len(ranked) - 1) // 2]]
  for record in chosen:
    record['clan_cost_runs'] = [run[0]['clan_cost'] for run in good]
  return chosen


def format_cost_table(records: list[dict]) -> str:
  """CLAN's cost per framework, variant and mode, and JAX's against torch's fastest eager."""
  header = (f'{"framework":9} {"variant":22} {"mode":5} {"CLAN ms":>9} {"ResNet ms":>9} '
            f'{"CLAN cost":>9} {"min":>6}  runs')
  lines = [header, '-' * len(header)]
  costs = {}
  for r in records:
    if 'error' in r:
      lines.append(f'{r["framework"]:9} {r["variant"]:22} {r["mode"]:5} FAILED: {r["error"]}')
    elif r['model'] == 'clan':
      resnet = next(o for o in records if o.get('model') == 'resnet' and o.get('mode') == r['mode']
                    and o['framework'] == r['framework'] and o.get('variant') == r['variant'])
      runs = ' '.join(f'{c:.3f}' for c in r['clan_cost_runs'])
      lines.append(f'{r["framework"]:9} {r["variant"]:22} {r["mode"]:5} '
                   f'{r["step_time_s"] * 1e3:9.1f} {resnet["step_time_s"] * 1e3:9.1f} '
                   f'{r["clan_cost"]:9.3f} {r["clan_cost_min"]:6.3f}  [{runs}]')
      costs[(r['framework'], r['variant'], r['mode'])] = r['clan_cost']
  for mode in sorted({mode for _, _, mode in costs}):
    jax_cost = next((c for (f, _, m), c in costs.items() if f == 'jax' and m == mode), None)
    torch_costs = {v: c for (f, v, m), c in costs.items()
                   if f == 'torch' and m == mode and v in EAGER_VARIANTS}
    if jax_cost and torch_costs:
      variant, torch_cost = min(torch_costs.items(), key=lambda item: item[1])
      lines.append(f'{mode}: CLAN costs {jax_cost:.3f}x ResNet in JAX, {torch_cost:.3f}x in '
                   f'torch ({variant}, the lowest eager cost)')
  lines.append('CLAN cost: CLAN\'s median step time over the plain ResNet\'s, the two alternated '
               'in one process; the run with the median cost of --repeats runs; min: the '
               'ratio of the fastest steps in that run.')
  return '\n'.join(lines)


def add_derived(records: list[dict], peak_tflops: float) -> None:
  """FLOPs of the JAX step for every record of its mode; TFLOP/s; MFU; ratios to torch."""
  flops = {r['mode']: r.get('flops_per_step') for r in records if r['framework'] == 'jax'}
  for r in records:
    if 'error' in r:
      continue
    r['flops_per_step'] = flops.get(r['mode'])
    if r['flops_per_step']:
      r['tflops'] = r['flops_per_step'] / r['step_time_s'] / 1e12
      if peak_tflops:
        r['mfu'] = r['tflops'] / peak_tflops
  for mode in {r['mode'] for r in records}:
    one = next((r for r in records if r['mode'] == mode and r.get('devices') == 1
                and r.get('variant', '').endswith('host devices') and 'error' not in r), None)
    for r in records:
      if one and r['mode'] == mode and 'error' not in r and 'host devices' in r['variant']:
        r['step_time_vs_one_device'] = r['step_time_s'] / one['step_time_s']
    jax_record = next((r for r in records if r['mode'] == mode and r['framework'] == 'jax'
                       and 'error' not in r), None)
    eager = [r for r in records if r['mode'] == mode and r['framework'] == 'torch'
             and r['variant'] in EAGER_VARIANTS and 'error' not in r]
    if jax_record:
      for r in records:
        if r['mode'] == mode and r['framework'] == 'torch' and 'error' not in r:
          r['jax_speedup'] = jax_record['images_per_sec'] / r['images_per_sec']
    if jax_record and eager:
      fastest = max(eager, key=lambda r: r['images_per_sec'])
      jax_record['torch_fastest_eager'] = fastest['variant']
      # > 1: JAX is slower. The targets are stated as this ratio.
      jax_record['step_time_ratio_to_torch_eager'] = (jax_record['step_time_s']
                                                      / fastest['step_time_s'])


def format_table(records: list[dict]) -> str:
  header = (f'{"framework":9} {"variant":22} {"mode":5} {"dtype":8} {"img/s":>9} '
            f'{"step ms":>9} {"compile s":>9} {"peak MiB":>9} {"TFLOP/s":>8} {"MFU":>6} '
            f'{"time/eager":>10} {"JAX x":>6}')
  lines = [header, '-' * len(header)]
  for r in records:
    if 'error' in r:
      lines.append(f'{r["framework"]:9} {r["variant"]:22} {r["mode"]:5} {r["dtype"]:8} '
                   f'FAILED: {r["error"]}')
      continue
    memory = r.get('peak_memory_bytes')
    lines.append(
        f'{r["framework"]:9} {r["variant"]:22} {r["mode"]:5} {r["dtype"]:8} '
        f'{r["images_per_sec"]:9.1f} {r["step_time_s"] * 1e3:9.1f} {r["compile_s"]:9.1f} '
        f'{memory / 2**20 if memory else float("nan"):9.0f} '
        f'{r.get("tflops", float("nan")):8.2f} '
        f'{r["mfu"] * 100 if "mfu" in r else float("nan"):5.1f}% '
        f'{r.get("step_time_ratio_to_torch_eager", float("nan")):10.2f} '
        f'{r.get("jax_speedup", float("nan")):6.2f}')
  for r in records:
    if 'step_time_vs_one_device' in r:
      lines.append(f'{r["mode"]} on {r["devices"]} host devices: '
                   f'{r["step_time_vs_one_device"]:.2f}x the one-device step time')
  lines.append('time/eager: the JAX step time over torch\'s fastest eager variant\'s (> 1: JAX '
               'is slower); JAX x: JAX images/s over that torch variant\'s.')
  return '\n'.join(lines)


def op_profile_text(record: dict) -> str:
  title = f'{record["model"]} {record["mode"]}, {record["variant"]}, {record["dtype"]}'
  return op_profile.format_profile(record['op_profile'], title)


def gpu_available() -> bool:
  """Whether torch or JAX sees a GPU, asked in a subprocess (JAX's backend is not started here)."""
  probe = ('import importlib.util as u\n'
           'ok = False\n'
           'if u.find_spec("torch"):\n'
           '  import torch; ok = torch.cuda.is_available()\n'
           'if not ok and u.find_spec("jax"):\n'
           '  import jax; ok = jax.default_backend() == "gpu"\n'
           'print(ok)')
  done = subprocess.run([sys.executable, '-c', probe], stdout=subprocess.PIPE, text=True,
                        check=False)
  return done.stdout.strip().endswith('True')
