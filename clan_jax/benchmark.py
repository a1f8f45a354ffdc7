"""Benchmark (not a test): the JAX model and its PyTorch twin side by side on one device.

    python -m clan_jax.benchmark [--model=clan|resnet --depth=50 --image_size=224
        --batch_size=8 --dtype=float32 --steps=10 --repeats=1 --peak_tflops=0 --json=PATH]
    python -m clan_jax.benchmark --clan_cost [--repeats=5 ...]   # CLAN's cost over ResNet
    python -m clan_jax.benchmark --frameworks=jax --profile_steps=3   # where JAX's time goes
    python -m clan_jax.benchmark --variants='bn_impl=custom_vjp' \
        --variants='stem_channels=4;downsample_impl=conv' [--rounds=5 --steps=10 ...]
    python -m clan_jax.benchmark --ceilings [--ceiling_copy_mib=0 --ceiling_matmul_size=0]
    python -m clan_jax.benchmark --xla_flags_probe=--xla_gpu_enable_triton_gemm=false,...

Times the train step (forward, multi-head loss, backward, SGD update of docs/MODEL.md's
recipe) and the eval forward on one in-memory uint8 batch (no TFDS, TensorFlow, clu or
ml_collections: it runs on a bare GPU image). Each framework, variant and mode runs in its
own subprocess, so that compilation caches and peak memory do not leak between them.
--clan_cost instead builds CLAN and the plain ResNet in one process per framework, variant
and mode and alternates their steps (measure_clan_cost): a ratio between processes run
minutes apart on a shared machine carries its drift.

JAX: clan_jax.train.steps.train_step, jitted with the state donated, in --dtype. PyTorch: the twin
(clan_jax.pytorch.twin) in the variants 'eager' (NCHW, float32), 'channels_last'
(float32), 'amp_bf16' (channels_last under torch.autocast bf16; GPU only unless named in
--torch_variants) and 'compile' (channels_last + torch.compile, under autocast if
--dtype=bfloat16; on the GPU, or on the CPU with --torch_compile).

Per record: images/s from the median step time (every step synchronised), the first
call's time ('compile_s': XLA compilation for JAX; for torch the first step, which holds
torch.compile's or cuDNN's start-up), peak memory (device memory on a GPU, the process's
peak RSS on a CPU), and the model's FLOPs per step from XLA's cost analysis of the lowered
JAX step (2 per multiply-add; the same figure is used for torch) with MFU = FLOP/s over
--peak_tflops. --profile_steps=N traces N more JAX steps with jax.profiler and adds
`op_profile` to the record: milliseconds per step by kind of XLA op, by part of the model
and pass, and for the costliest ops with the GB/s each achieves (memory-bound at half
--peak_gbps), and an audit of the compiled module (clan_jax.perf.op_profile).

--variants compares named variants of the JAX train step with 'today' (the flags' model with
every implementation switch at today's explicit form: clan_jax.models.fields.TODAYS_FORMS),
all in one worker process: a variant is ';'-joined overrides of ModelConfig's fields. Each is
compiled (time; XLA's memory analysis: peak and temporary bytes; FLOPs), checked (its first
step's loss and gradient norm against today's, from the same state on the same batch,
relative; flagged above 1e-3 in float32, 1e-2 in bfloat16), then timed in --rounds rounds
that take --steps steps of each variant in turn: median and fastest step, images/s, today's
time over the variant's. The records are rewritten to --json as each phase ends; a variant
whose compilation kills the worker is recorded as failed and the others run again without
it. With --profile_steps, today's step and the fastest variant that passed are profiled.
--ceilings measures the device's bandwidth (an elementwise pass over a float32 array) and
its matrix-product TFLOP/s (bfloat16, float32); --xla_flags_probe tries each XLA flag alone
in a process of its own (an unknown flag aborts a process) and says which this jaxlib takes.
--compilation_cache_dir keeps compiled steps (and XLA's GPU autotuning) across processes.
"""

import json
import os
import sys
import tempfile
import time

from absl import flags

from clan_jax.base import cli
from clan_jax.base.errors import UserError
from clan_jax.base.files import write_json
from clan_jax.models.fields import DEPTHS  # Pure Python: no JAX, ml_collections or TF.
from clan_jax.perf import ceilings, op_profile, variants, xla_flags_probe
from clan_jax.perf.step_benchmark import (MODEL_DEFAULTS, SWITCHES, TORCH_VARIANTS, add_derived,
                                          format_cost_table, format_table, gpu_available,
                                          jax_variant, measure_clan_cost, measure_jax,
                                          measure_torch, median_cost_run, median_record,
                                          op_profile_text, planned_runs, run_worker,
                                          use_compilation_cache)

flags.DEFINE_enum('model', 'clan', ['clan', 'resnet'], 'CLAN, or the plain ResNet classifier.')
flags.DEFINE_integer('depth', 50, 'ResNet depth: 18, 34, 50, 101 or 152.')
flags.DEFINE_integer('image_size', 224, 'Square input size (a multiple of 32).')
flags.DEFINE_integer('batch_size', 8, 'Images per step.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                  'JAX compute dtype (and torch.compile under autocast for bfloat16).')
flags.DEFINE_bool('conv1x1_as_matmul', True, 'JAX: 1x1 convolutions as matrix products.')
flags.DEFINE_enum('attention_impl', 'auto', ['auto', 'xla', 'cudnn'], 'JAX: CLCA\'s attention.')
flags.DEFINE_enum('clca_order', 'auto', ['auto', 'standard', 'folded'],
                  'JAX: CLCA\'s order of products (docs/MODEL.md).')
flags.DEFINE_bool('remat', False, 'JAX: recompute each ResNet block in the backward pass.')
flags.DEFINE_integer('steps', 10, 'Timed steps per run (after --warmup steps); --variants: '
                     'per variant and round; --ceilings: timed calls of each measurement.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after the first (compiling) call.')
flags.DEFINE_integer('repeats', 1, 'Runs (subprocesses) per record; the median is reported.')
flags.DEFINE_float('peak_tflops', 0.0, 'The device\'s peak TFLOP/s in --dtype, for MFU (0: none).')
flags.DEFINE_list('frameworks', ['jax', 'torch'], 'Which of jax, torch.')
flags.DEFINE_list('modes', ['train', 'eval'], 'Which of train, eval.')
flags.DEFINE_list('torch_variants', [], f'Torch variants among {TORCH_VARIANTS}; empty: eager '
                  'and channels_last, plus amp_bf16 and compile on a GPU.')
flags.DEFINE_bool('torch_compile', False, 'Add torch.compile on the CPU (slow to compile).')
flags.DEFINE_list('host_devices', [], 'Scaling: JAX alone on each of these numbers of CPU '
                  'devices (--xla_force_host_platform_device_count), the batch split over them.')
flags.DEFINE_bool('clan_cost', False, 'Measure CLAN\'s cost over the plain ResNet (--model does '
                  'not apply): both models in one process per framework, variant and mode, '
                  'their steps alternated; the median of --repeats runs of the step-time ratio.')
flags.DEFINE_integer('profile_steps', 0, 'JAX: after the timed steps, trace this many more with '
                     'jax.profiler and print where their time goes, per XLA op and per kind '
                     'of op (clan_jax.perf.op_profile); 0: no trace.')
flags.DEFINE_float('peak_gbps', 0.0, 'JAX: the device\'s peak memory bandwidth in GB/s; '
                   '--profile_steps flags ops at half of it or more (0: none).')
flags.DEFINE_string('profile_dir', '', 'JAX: keep the --profile_steps trace here (for '
                    'TensorBoard, XProf or Perfetto); empty: a temporary directory.')
flags.DEFINE_multi_string('variants', [], 'JAX train-step variants against today\'s in one '
                          'process: \';\'-joined model-field overrides, e.g. '
                          '\'bn_impl=custom_vjp;stem_channels=4\'; repeat the flag per variant.')
flags.DEFINE_integer('rounds', 5, '--variants: rounds; each times --steps steps of every '
                     'variant in turn.')
flags.DEFINE_string('compilation_cache_dir', '', 'JAX\'s persistent compilation cache (with '
                    'XLA\'s GPU autotuning) for the workers; empty: none.')
flags.DEFINE_bool('ceilings', False, 'Measure the device\'s copy bandwidth and matmul TFLOP/s.')
flags.DEFINE_integer('ceiling_copy_mib', 0, '--ceilings: the array size (0: 1024 on a GPU, 64 '
                     'on a CPU).')
flags.DEFINE_integer('ceiling_matmul_size', 0, '--ceilings: the square product\'s side (0: '
                     '8192 on a GPU, 1024 on a CPU).')
flags.DEFINE_list('xla_flags_probe', [], 'Which of these XLA flags this jaxlib accepts, each '
                  'tried alone in a process of its own.')
flags.DEFINE_string('json', '', 'Also write the records (a JSON list) to this file.')
flags.DEFINE_string('worker', '', 'Internal: run one measurement given as JSON.')
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.worker:
    _work(json.loads(FLAGS.worker))
    return
  _check_flags()
  if FLAGS.variants:
    _run_variants()
    return
  if FLAGS.ceilings:
    _run_ceilings()
    return
  if FLAGS.xla_flags_probe:
    _probe_xla_flags()
    return
  if FLAGS.host_devices:
    runs = [('jax', int(n), mode) for mode in FLAGS.modes for n in FLAGS.host_devices]
  else:
    runs = planned_runs(FLAGS.frameworks, FLAGS.modes, FLAGS.torch_variants,
                        gpu=gpu_available(), torch_compile=FLAGS.torch_compile)
  base = {'model': FLAGS.model, 'depth': FLAGS.depth, 'image_size': FLAGS.image_size,
          'batch_size': FLAGS.batch_size, 'dtype': FLAGS.dtype, 'steps': FLAGS.steps,
          'warmup': FLAGS.warmup, 'profile_steps': FLAGS.profile_steps,
          'profile_dir': FLAGS.profile_dir, 'peak_gbps': FLAGS.peak_gbps,
          **{switch: FLAGS[switch].value for switch in SWITCHES}}
  records, started = [], time.time()
  for index, (framework, variant, mode) in enumerate(runs):
    spec = {**base, 'framework': framework, 'mode': mode}
    if FLAGS.host_devices:
      spec.update(devices=variant, host_devices=True)
    if FLAGS.clan_cost:
      spec['clan_cost'] = True
    spec['variant'] = jax_variant(spec) if framework == 'jax' else variant
    runs_of_spec = []
    for repeat in range(FLAGS.repeats):
      print(f'[{index + 1}/{len(runs)}] {framework} {variant} {mode} (run {repeat + 1}/'
            f'{FLAGS.repeats}; {time.time() - started:.0f} s elapsed)', file=sys.stderr,
            flush=True)
      runs_of_spec.append(run_worker(spec))
    if FLAGS.clan_cost:
      records += median_cost_run(runs_of_spec)
    else:
      records.append(median_record(runs_of_spec))
  if FLAGS.clan_cost:
    print(format_cost_table(records))
  else:
    add_derived(records, FLAGS.peak_tflops)
    print(format_table(records))
    for r in records:
      if r.get('op_profile'):
        print(op_profile_text(r))
      elif r.get('op_profile_error'):
        print(f'{r["model"]} {r["mode"]}: no profile ({r["op_profile_error"]})')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(records, f, indent=1)
    print(f'records written to {FLAGS.json}')
  failed = sum('error' in r for r in records)
  if failed:  # The table and records stand; the exit status says not all of it ran.
    sys.exit(f'{failed} of {len(records)} runs failed (their errors are above).')


def _work(spec: dict) -> None:
  """A worker: one measurement given as JSON; its record(s) the last line of stdout."""
  if spec.get('compilation_cache_dir'):
    use_compilation_cache(spec['compilation_cache_dir'])
  if spec.get('kind') == 'variants':
    from clan_jax.perf import variant_steps  # Late: imports JAX, which the parent must not.
    variant_steps.measure_variants(spec)  # Its records are in spec['json'].
    return
  if spec.get('kind') == 'ceilings':
    print(json.dumps(ceilings.measure_ceilings(spec)), flush=True)
    return
  measure = measure_jax if spec['framework'] == 'jax' else measure_torch
  if spec.get('clan_cost'):
    measure = measure_clan_cost
  print(json.dumps(measure(spec)), flush=True)


def _run_variants() -> None:
  base = {**MODEL_DEFAULTS, 'name': FLAGS.model, 'depth': FLAGS.depth, 'dtype': FLAGS.dtype,
          **{switch: FLAGS[switch].value for switch in SWITCHES}}
  planned = variants.plan_variants(base, FLAGS.variants)
  with tempfile.TemporaryDirectory() as scratch:  # The records' file when --json is not given.
    spec = {'kind': 'variants', 'model': FLAGS.model, 'depth': FLAGS.depth,
            'image_size': FLAGS.image_size, 'batch_size': FLAGS.batch_size,
            'dtype': FLAGS.dtype, 'steps': FLAGS.steps, 'warmup': FLAGS.warmup,
            'rounds': FLAGS.rounds, 'profile_steps': FLAGS.profile_steps,
            'profile_dir': FLAGS.profile_dir, 'peak_tflops': FLAGS.peak_tflops,
            'peak_gbps': FLAGS.peak_gbps, 'compilation_cache_dir': FLAGS.compilation_cache_dir, 'variants': planned,
            'json': FLAGS.json or os.path.join(scratch, 'records.json')}
    print(f'{len(planned)} variants of the train step in one process: '
          f'{", ".join(v["variant"] for v in planned)}', file=sys.stderr, flush=True)
    records = variants.run_variants(spec)
  print(variants.format_variant_table(records))
  for r in records:
    if r.get('op_profile'):
      print(op_profile.format_profile(r['op_profile'], f'{r["variant"]}, {r["dtype"]}'))
  if FLAGS.json:
    print(f'records written to {FLAGS.json}')
  failed = variants.failures(records)
  if failed:
    sys.exit(f'{len(failed)} of {len(records) - 1} variants failed or differ from today\'s: '
             f'{", ".join(failed)}.')


def _run_ceilings() -> None:
  spec = {'kind': 'ceilings', 'copy_mib': FLAGS.ceiling_copy_mib,
          'matmul_size': FLAGS.ceiling_matmul_size, 'repeats': FLAGS.steps}
  result = run_worker(spec)
  records = result if isinstance(result, list) else [result]
  print(ceilings.format_ceilings(records))
  _write_records(records)
  if any('error' in r for r in records):
    sys.exit('the ceilings\' worker failed (its errors are above).')


def _probe_xla_flags() -> None:
  records = []
  for flag in FLAGS.xla_flags_probe:
    records.append(xla_flags_probe.probe_flag(flag))
    print(xla_flags_probe.format_probe(records[-1:]), flush=True)
    _write_records(records)  # As each flag is answered: a killed probe leaves the others.


def _write_records(records: list[dict]) -> None:
  if FLAGS.json:
    write_json(records, FLAGS.json)


def _check_flags() -> None:
  modes = [name for name in ('variants', 'ceilings', 'xla_flags_probe', 'clan_cost',
                             'host_devices') if FLAGS[name].value]
  if len(modes) > 1:
    raise UserError(f'--{" and --".join(modes)} measure different things; run them '
                    'separately.')
  for flag in FLAGS.xla_flags_probe:
    if not flag.startswith('--'):
      raise UserError(f'--xla_flags_probe: {flag!r} is not an XLA flag; write it as in '
                      'XLA_FLAGS, e.g. --xla_gpu_enable_triton_gemm=false.')
  if FLAGS.variants and (FLAGS.rounds < 1 or FLAGS.warmup < 0):
    raise UserError('--rounds must be >= 1 and --warmup >= 0.')
  if FLAGS.ceiling_copy_mib < 0 or FLAGS.ceiling_matmul_size < 0:
    raise UserError('--ceiling_copy_mib and --ceiling_matmul_size must be >= 0 (0: the '
                    'device\'s default).')
  unknown = set(FLAGS.frameworks) - {'jax', 'torch'}
  unknown |= set(FLAGS.modes) - {'train', 'eval'}
  unknown |= set(FLAGS.torch_variants) - set(TORCH_VARIANTS)
  if unknown:
    raise UserError(f'unknown value(s) {sorted(unknown)} in --frameworks, --modes or '
                         f'--torch_variants; allowed: jax, torch; train, eval; {TORCH_VARIANTS}.')
  if FLAGS.depth not in DEPTHS:
    raise UserError(f'--depth={FLAGS.depth}: use one of {", ".join(map(str, DEPTHS))}.')
  if FLAGS.image_size % 32 or FLAGS.image_size <= 0:
    raise UserError(f'--image_size={FLAGS.image_size}: use a positive multiple of 32.')
  for n in FLAGS.host_devices:
    if not n.isdigit() or int(n) < 1 or FLAGS.batch_size % int(n):
      raise UserError(f'--host_devices={n}: each must be a positive integer that divides '
                           f'--batch_size={FLAGS.batch_size}.')
  if FLAGS.profile_steps < 0 or (FLAGS.profile_steps and FLAGS.clan_cost):
    raise UserError('--profile_steps must be >= 0, and profiles one model per process: '
                         'not with --clan_cost.')
  if FLAGS.steps < 1 or FLAGS.repeats < 1 or FLAGS.batch_size < 2:
    raise UserError('--steps and --repeats must be >= 1, --batch_size >= 2 (BatchNorm).')


def run() -> None:
  """The console command `clan-benchmark`."""
  cli.run(main)  # A bad flag: one `error:` line and exit status 2, no traceback.


if __name__ == '__main__':
  run()
