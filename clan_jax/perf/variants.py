"""--variants (clan_jax/benchmark.py): named variants of the JAX train step against 'today',
in one worker process (clan_jax/perf/variant_steps.py measures them). Here: the variants
parsed from their specs, the worker driven (again without a variant whose compilation killed
it), and the table. Pure Python: the parent process imports no JAX, so that it holds no
device memory."""

import ast
import dataclasses
import json
import os
import subprocess
import sys
from typing import Any, Optional

from clan_jax.base.errors import ConfigError, UserError
from clan_jax.base.files import write_json
from clan_jax.models.fields import TODAYS_FORMS, ModelConfig

# Variant 0: every implementation switch at today's explicit form (TODAYS_FORMS), so that a
# switch's 'auto' default cannot make 'today' one of the variants it is measured by.
TODAY = 'today'
FIXED_FIELDS = ('name', 'depth')  # --model and --depth: every variant shares the parameters.
# The correctness check: the first step's loss and gradient norm against today's, relative.
# float32's 1e-3: a form that reorders every BatchNorm's sums (bn_impl) moved CLAN-R50's
# first gradient norm by 2.5e-4 at 224 px, batch 8; float32 gradients are themselves 2e-2
# from float64's there (BENCHMARKS.md). A wrong function moves them by far more.
TOLERANCES = {'float32': 1e-3, 'bfloat16': 1e-2}
# A record's status while its worker has it in hand; the parent's cue after a crash.
IN_PROGRESS = ('compiling', 'checking')


def variant_fields() -> list[str]:
  return [f.name for f in dataclasses.fields(ModelConfig) if f.name not in FIXED_FIELDS]


def plan_variants(base_model: dict, specs: list[str]) -> list[dict]:
  """[today, each spec's variant]: {'index', 'variant' (its name), 'overrides', 'model_fields'}.

  base_model: ModelConfig's fields as the command's flags set them. A spec is ';'-joined
  field=value overrides ('bn_impl=custom_vjp;stem_channels=4'); each value is read by the
  type of the field's default ('auto' always allowed). UserError names a bad spec and lists
  the fields a variant may set."""
  today = {**base_model, **{k: v for k, v in TODAYS_FORMS.items() if k in base_model}}
  _validate(today, 'today')
  planned = [{'index': 0, 'variant': TODAY, 'overrides': {}, 'model_fields': today}]
  for spec in specs:
    overrides = parse_spec(spec)
    name = ';'.join(f'{k}={_text(v)}' for k, v in overrides.items())
    if any(v['variant'] == name for v in planned):
      raise UserError(f'--variants={spec!r} is given twice (or is {TODAY!r}); give each once.')
    model = {**today, **overrides}
    _validate(model, spec)
    planned.append({'index': len(planned), 'variant': name, 'overrides': overrides,
                    'model_fields': model})
  return planned


def parse_spec(spec: str) -> dict:
  """{field: value} of 'field=value;field=value'."""
  fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
  overrides = {}
  for item in (part.strip() for part in spec.split(';')):
    name, sep, raw = item.partition('=')
    name, raw = name.strip(), raw.strip()
    if not sep or not name or not raw:
      raise _spec_error(spec, f'{item!r} is not field=value')
    if name in FIXED_FIELDS:
      raise _spec_error(spec, f'{name} is set by --{"model" if name == "name" else name} '
                        'for every variant alike')
    if name not in fields:
      raise _spec_error(spec, f'{name!r} is not a model field')
    if name in overrides:
      raise _spec_error(spec, f'{name} is set twice')
    overrides[name] = _parse_value(fields[name], raw, spec)
  return overrides


def _parse_value(field: dataclasses.Field, raw: str, spec: str) -> Any:
  default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
  if raw == 'auto':
    return raw
  if isinstance(default, bool):
    if raw.lower() in ('true', 'false'):
      return raw.lower() == 'true'
    raise _spec_error(spec, f'{field.name}={raw}: use True or False')
  if isinstance(default, int) or (raw.lstrip('-').isdigit() and any(
      isinstance(c, int) and not isinstance(c, bool) for c in field.metadata.get('choices', ()))):
    try:
      return int(raw)
    except ValueError:
      raise _spec_error(spec, f'{field.name}={raw}: use an integer') from None
  if isinstance(default, (tuple, dict)):
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      raise _spec_error(spec, f'{field.name}={raw}: use a Python literal like '
                        f'{_text(default)}') from None
    return tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
  return raw


def _validate(model: dict, spec: str) -> None:
  try:
    ModelConfig.from_section(model)
  except ConfigError as error:
    raise _spec_error(spec, str(error).rstrip('.')) from None


def _spec_error(spec: str, problem: str) -> UserError:
  return UserError(f'--variants={spec!r}: {problem}. A variant is \';\'-joined field=value '
                   f'overrides of these model fields: {", ".join(variant_fields())}.')


def _text(value: Any) -> str:
  return json.dumps(value) if isinstance(value, dict) else str(value)


def tolerance(dtypes: tuple[str, ...]) -> float:
  """The check's relative tolerance: bfloat16's if either step computes in it."""
  return TOLERANCES['bfloat16' if 'bfloat16' in dtypes else 'float32']


# -------------------------------------------------------------------------- the driver

def identity(spec: dict, variant: dict) -> dict:
  """A variant's record before it is measured."""
  return {'framework': 'jax', 'mode': 'train', 'variant': variant['variant'],
          'index': variant['index'], 'overrides': variant['overrides'],
          'model': spec['model'], 'depth': spec['depth'], 'image_size': spec['image_size'],
          'batch_size': spec['batch_size'], 'dtype': spec['dtype'],
          'model_fields': variant['model_fields'], 'status': 'pending'}


def write_records(records: list[dict], path: str) -> None:
  write_json(sorted(records, key=lambda r: r['index']), path)


def run_variants(spec: dict) -> list[dict]:
  """Runs the worker (measure_variants) on spec['variants'] and returns its records, also in
  spec['json']. A variant whose compilation or check kills the process (XLA aborts rather
  than raises) gets an error record, and the worker runs again without it."""
  failed, variants = [], list(spec['variants'])
  while True:
    run_spec = {**spec, 'variants': variants, 'failed': failed}
    write_records([identity(spec, v) for v in variants] + failed, spec['json'])
    cmd = [sys.executable, '-m', 'clan_jax.benchmark', f'--worker={json.dumps(run_spec)}']
    status = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED='1'),
                            check=False).returncode
    records = read_records(spec['json'])
    if status == 0:
      return records
    culprit = next((r for r in records if r['status'] in IN_PROGRESS), None)
    if culprit is None or culprit['index'] == 0:  # Nothing to leave out: today's is needed.
      for record in records:
        if record['status'] != 'done' and 'error' not in record:
          record.update(status='failed', error=f'the worker died (exit status {status}) '
                        f'with this variant {record["status"]}')
      write_records(records, spec['json'])
      return records
    failed.append({**culprit, 'status': 'failed', 'error': f'the worker died (exit status '
                   f'{status}) {culprit["status"]} it; the others ran again without it'})
    variants = [v for v in variants if v['index'] != culprit['index']]
    print(f'variant {culprit["variant"]!r} killed its worker while {culprit["status"]}; '
          'running the others again without it', file=sys.stderr, flush=True)


def read_records(path: str) -> list[dict]:
  with open(path) as f:
    return json.load(f)


def failures(records: list[dict]) -> list[str]:
  """The variants that failed or whose check differs from today's."""
  return [r['variant'] for r in records if 'error' in r or r.get('check_passed') is False]


# --------------------------------------------------------------------------- the table

def format_variant_table(records: list[dict]) -> str:
  header = (f'{"variant":34} {"img/s":>8} {"median ms":>9} {"min ms":>8} {"x today":>7} '
            f'{"x min":>6} {"compile s":>9} {"total MiB":>9} {"temp MiB":>8} {"GFLOP":>8} '
            f'{"loss rel":>8} {"gnorm rel":>9}  check')
  lines = [header, '-' * len(header)]
  for r in records:
    name = r['variant'] if len(r['variant']) <= 34 else r['variant'][:31] + '...'
    if 'error' in r:
      lines.append(f'{name:34} FAILED: {r["error"]}')
      continue
    if r['status'] != 'done':
      lines.append(f'{name:34} not measured ({r["status"]})')
      continue
    check = ('ok' if r['check_passed'] else 'DIFFERS') if r['index'] else 'reference'
    lines.append(
        f'{name:34} {r["images_per_sec"]:8.1f} {r["step_time_s"] * 1e3:9.2f} '
        f'{r["step_time_min_s"] * 1e3:8.2f} {r["speedup"]:7.3f} {r["speedup_min"]:6.3f} '
        f'{r["compile_s"]:9.1f} {_mib(r.get("footprint_bytes")):9.0f} '
        f'{_mib(r.get("temp_bytes")):8.0f} '
        f'{_giga(r.get("flops_per_step")):8.2f} {r["loss_rel_diff"]:8.1e} '
        f'{r["grad_norm_rel_diff"]:9.1e}  {check}')
  lines.append('x today: today\'s median step time over the variant\'s (> 1: faster), its steps '
               'and today\'s alternated in one process; x min: the same of the fastest steps. '
               'total, temp: the compiled step\'s arguments, outputs not aliased to them and '
               'temporaries, and the temporaries alone (XLA\'s memory analysis; its peak is '
               'in the records). loss rel, gnorm rel: '
               'the first step\'s loss and gradient norm against today\'s on the same batch and '
               'state, relative; check: within '
               f'{TOLERANCES["float32"]:g} (float32) or {TOLERANCES["bfloat16"]:g} (bfloat16).')
  return '\n'.join(lines)


def _mib(size: Optional[float]) -> float:
  return size / 2**20 if size is not None else float('nan')


def _giga(flops: Optional[float]) -> float:
  return flops / 1e9 if flops else float('nan')
