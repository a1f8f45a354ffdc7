"""Where a jitted step's time goes: a jax.profiler trace of a few steps, summed per XLA op,
per kind of op (convolution, matmul, attention, reduction, elementwise, data movement,
collective) and per scope of the model and pass (clan_jax.perf.op_scopes), with the GB/s
each op achieves (bytes of its operands and result over its time), the device's busy time
against the step's wall time, and the compiled module's audit (clan_jax.perf.hlo_audit).

    summary = op_profile.profile(step, compiled.as_text(), steps=3, logdir=None)
    print(op_profile.format_profile(summary))
    print(op_profile.format_audit(op_profile.audit(compiled.as_text())))  # No trace.

Reads the trace with jax.profiler.ProfileData (no TensorBoard needed, so it runs on a bare
GPU image). Device planes (/device:GPU:0, TPU) are preferred; on a CPU the XLA thunks of
the host plane are used. Each event counts its self time (time not inside a nested event
on the same line), so nested events are not counted twice. An event is attributed to an
HLO instruction by its `hlo_op` stat, an `hlo_op=` in its annotation, or its name (a GPU
kernel is named after its fusion, with `.` as `_`); the instruction's kind comes from the
compiled module's text. A library kernel that no instruction is named after (cuDNN, cuBLAS
inside a CUDA graph) is sorted by words in its name.
"""

import collections
import glob
import os
import re
import statistics
import tempfile
import time
from typing import Callable, Iterable, Optional

from clan_jax.perf import hlo_audit, hlo_module, op_scopes

CATEGORIES = ('convolution', 'matmul', 'attention', 'reduction', 'elementwise',
              'data movement', 'collective', 'other')

_MOVEMENT = {'copy', 'transpose', 'pad', 'slice', 'concatenate', 'dynamic-slice',
             'dynamic-update-slice', 'reverse', 'broadcast', 'gather', 'scatter', 'copy-start',
             'copy-done', 'bitcast', 'reshape', 'iota'}
_REDUCTION = {'reduce', 'reduce-window', 'select-and-scatter', 'sort'}
_COLLECTIVE = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all')
# An op at this fraction of the peak bandwidth or more is flagged memory-bound: only fewer
# bytes make it faster.
MEMORY_BOUND_FRACTION = 0.5
_CONTROL = {'while', 'conditional', 'call', 'async-start', 'async-done'}


# ------------------------------------------------------------------ the compiled module

def _custom_call_category(attributes: str) -> str:
  target = re.search(r'custom_call_target="([^"]*)"', attributes)
  target = target.group(1).lower() if target else ''
  if 'fmha' in target or 'attention' in target or 'flash' in target:
    return 'attention'
  if 'conv' in target:
    return 'convolution'
  if any(word in target for word in ('gemm', 'matmul', 'cublas', 'dot')):
    return 'matmul'
  return 'other'


def hlo_op_categories(hlo_text: str) -> dict[str, str]:
  """Each instruction of an optimised HLO module (`compiled.as_text()`) -> its category.
  A fusion takes the heaviest kind among the instructions it calls: convolution, attention,
  matmul, reduction; one that only moves data is 'data movement'; else 'elementwise'."""
  return module_categories(hlo_module.parse(hlo_text))


def module_categories(module: hlo_module.Module) -> dict[str, str]:
  """hlo_op_categories of a parsed module."""
  instructions, computations = module.instructions, module.computations
  memo: dict[str, str] = {}

  def of_instruction(name: str, seen: frozenset) -> str:
    if name in memo:
      return memo[name]
    instruction = instructions[name]
    opcode = instruction.opcode
    if opcode == 'convolution':
      category = 'convolution'
    elif opcode == 'dot':
      category = 'matmul'
    elif opcode == 'custom-call':
      category = _custom_call_category(instruction.attributes)
    elif opcode.startswith(_COLLECTIVE):
      category = 'collective'
    elif opcode in _REDUCTION:
      category = 'reduction'
    elif opcode in _MOVEMENT:
      category = 'data movement'
    elif opcode == 'fusion':
      called = instruction.called
      category = of_fusion(called[0], seen) if called else 'other'
    elif opcode in _CONTROL:
      category = 'other'
    else:
      category = 'elementwise'
    memo[name] = category
    return category

  def of_fusion(computation: str, seen: frozenset) -> str:
    if computation in seen or computation not in computations:
      return 'other'
    seen = seen | {computation}
    members = [n for n in computations[computation]
               if instructions[n].opcode not in hlo_module.PLUMBING]
    kinds = {of_instruction(n, seen) for n in members}
    for category in ('convolution', 'attention', 'matmul', 'collective', 'reduction'):
      if category in kinds:
        return category
    if kinds and kinds <= {'data movement'}:
      return 'data movement'
    return 'elementwise'

  return {name: of_instruction(name, frozenset()) for name in instructions}


_KERNEL_WORDS = (  # Library kernels without an HLO name (e.g. inside a CUDA graph).
    ('attention', ('fmha', 'flash', 'attention')),
    ('convolution', ('conv', 'fprop', 'dgrad', 'wgrad', 'implicit_gemm')),
    ('matmul', ('gemm', 'cutlass', 'cublas', 'nvjet', 'matmul')),
    ('collective', ('nccl',)),
    ('data movement', ('memcpy', 'memset', 'transpose')),
)


def kernel_name_category(name: str) -> str:
  """A device kernel's kind from its name, for kernels no HLO instruction is named after."""
  lowered = name.lower()
  for category, words in _KERNEL_WORDS:
    if any(word in lowered for word in words):
      return category
  return 'other'


def _kernel_name_key(name: str) -> str:
  """A GPU kernel's name compared with an HLO name: LLVM turns `.` and `-` into `_`."""
  return re.sub(r'[^0-9A-Za-z]', '_', name)


# ----------------------------------------------------------------------------- the trace

def self_times(events: Iterable[tuple[int, int, str]]) -> dict[int, int]:
  """{index: self duration} of (start, duration, name) events on one timeline line: each
  event's duration less that of the events nested inside it."""
  ordered = sorted(enumerate(events), key=lambda item: (item[1][0], -item[1][1]))
  own, stack = {}, []
  for index, (start, duration, _) in ordered:
    own[index] = duration
    while stack and start >= stack[-1][1]:
      stack.pop()
    if stack:
      own[stack[-1][0]] -= duration
    stack.append((index, start + duration))
  return own


def _union_ns(intervals: list[tuple[int, int]]) -> int:
  total, end = 0, None
  for start, stop in sorted(intervals):
    if end is None or start > end:
      total += stop - start
      end = stop
    elif stop > end:
      total += stop - end
      end = stop
  return total


def _hlo_op_of(event, known: dict[str, str]) -> Optional[str]:
  for key, value in event.stats:
    if key == 'hlo_op' and isinstance(value, str):
      return value
    if isinstance(value, str) and 'hlo_op=' in value:
      return re.findall(r'hlo_op=([^,#\s]+)', value)[-1]
  return known.get(_kernel_name_key(event.name))


def _timeline_planes(planes) -> list:
  """The device planes if the trace has any with events, else the host CPU plane."""
  planes = list(planes)  # ProfileData yields them once.
  device = [p for p in planes if p.name.startswith('/device:') and any(
      True for line in p.lines for _ in line.events)]
  return device or [p for p in planes if p.name == '/host:CPU']


def op_times(xplane_path: str, hlo_text: str) -> dict:
  """Self time and calls per op of the trace at `xplane_path`, with the union of the busy
  intervals, on the device planes (else the host's XLA thunks)."""
  from jax.profiler import ProfileData  # Late: no JAX in the benchmark's parent, which imports this.

  return op_times_of_planes(ProfileData.from_file(xplane_path).planes, hlo_text)


def op_times_of_planes(planes, hlo_text: str) -> dict:
  """op_times of planes as jax.profiler.ProfileData gives them (name, lines; each line's
  events with name, start_ns, duration_ns and (name, value) stats)."""
  known = {_kernel_name_key(name): name for name in hlo_op_categories(hlo_text)}
  per_op = collections.defaultdict(lambda: [0, 0])  # op -> [self ns, calls]
  planes = _timeline_planes(planes)
  busy = []
  for plane in planes:
    on_device = plane.name.startswith('/device:')
    for line in plane.lines:
      events = [e for e in line.events if e.name and not e.name.startswith('end: ')]
      ops = [_hlo_op_of(e, known) or (e.name if on_device else None) for e in events]
      timed = [(e.start_ns, e.duration_ns, op) for e, op in zip(events, ops) if op]
      for index, own in self_times(timed).items():
        start, duration, op = timed[index]
        per_op[op][0] += own
        per_op[op][1] += 1
        busy.append((start, start + duration))
  return {'planes': [p.name for p in planes], 'per_op': dict(per_op),
          'busy_ns': _union_ns(busy)}


def summarize(times: dict, hlo_text: str, steps: int, step_time_s: float, top: int,
              peak_gbps: Optional[float] = None) -> dict:
  """Per step: milliseconds per category, per scope of the model (op_scopes) and for the `top`
  costliest ops (with the GB/s each achieves, and whether that is at least
  MEMORY_BOUND_FRACTION of `peak_gbps` if given); busy time; the module's audit."""
  module = hlo_module.parse(hlo_text)
  categories = module_categories(module)
  by_category = dict.fromkeys(CATEGORIES, 0.0)
  rows = []
  for op, (ns, calls) in times['per_op'].items():
    category = categories.get(op) or kernel_name_category(op)
    by_category[category] += ns / steps / 1e6
    rows.append({'op': op, 'category': category, 'ms_per_step': ns / steps / 1e6,
                 'calls_per_step': calls / steps,
                 **bandwidth(module, op, ns / _runs(module, op, calls, steps), peak_gbps)})
  op_ms = sum(by_category.values())
  rows.sort(key=lambda row: -row['ms_per_step'])
  return {'planes': times['planes'], 'steps': steps, 'step_ms': step_time_s * 1e3,
          'op_ms_per_step': op_ms, 'busy_ms_per_step': times['busy_ns'] / steps / 1e6,
          'categories': {c: ms for c, ms in by_category.items() if ms > 0},
          'scopes': op_scopes.scope_table({r['op']: r['ms_per_step'] for r in rows}, module),
          'peak_gbps': peak_gbps, 'memory_bound': _memory_bound(rows),
          'top_families': op_families(rows)[:top], 'top_ops': rows[:top], 'ops': len(rows),
          'audit': hlo_audit.audit_module(module)}


def bandwidth(module: hlo_module.Module, op: str, ns_per_call: float,
              peak_gbps: Optional[float] = None) -> dict:
  """{'bytes': read + written per call (from the shapes of the op's operands and result),
  'gb_per_s': over its time per call} of an op of the module; with `peak_gbps`, also its
  fraction of that peak and 'memory_bound' (at least MEMORY_BOUND_FRACTION of it)."""
  instruction = module.instructions.get(op)
  if instruction is None:
    return {}
  moved = hlo_module.traffic_bytes(module, instruction)
  result = {'bytes': moved, 'gb_per_s': moved / ns_per_call if ns_per_call > 0 else None}
  if peak_gbps and result['gb_per_s'] is not None:
    result['peak_fraction'] = result['gb_per_s'] / peak_gbps
    result['memory_bound'] = result['peak_fraction'] >= MEMORY_BOUND_FRACTION
  return result


def _runs(module: hlo_module.Module, op: str, calls: int, steps: int) -> int:
  """Times an op ran in the trace: once per step in the entry computation (a cuDNN call may
  launch several kernels), else once per traced event (a loop body's)."""
  instruction = module.instructions.get(op)
  return steps if instruction and instruction.computation == module.entry else max(calls, 1)


def _memory_bound(rows: list[dict]) -> dict:
  bound = [row for row in rows if row.get('memory_bound')]
  return {'ops': len(bound), 'ms_per_step': sum(row['ms_per_step'] for row in bound)}


def op_families(rows: list[dict]) -> list[dict]:
  """Ops summed by name without XLA's numeric suffix (`copy_bitcast_fusion.43` ->
  `copy_bitcast_fusion`) and kind: the same fusion pattern repeated through the network."""
  families = {}
  for row in rows:
    key = (re.sub(r'[._]\d+$', '', row['op']), row['category'])
    family = families.setdefault(key, {'family': key[0], 'category': key[1],
                                       'ms_per_step': 0.0, 'ops': 0})
    family['ms_per_step'] += row['ms_per_step']
    family['ops'] += 1
  return sorted(families.values(), key=lambda family: -family['ms_per_step'])


def trace_steps(step: Callable[[], None], steps: int, logdir: str) -> tuple[str, float]:
  """(path of the trace's .xplane.pb, median wall time of a traced step in s)."""
  import jax  # Late: the benchmark's parent process imports this module and must not load JAX.

  times = []
  jax.profiler.start_trace(logdir)
  try:
    for _ in range(steps):
      start = time.perf_counter()
      step()
      times.append(time.perf_counter() - start)
  finally:
    jax.profiler.stop_trace()
  paths = sorted(glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise RuntimeError(f'jax.profiler wrote no .xplane.pb under {logdir}')
  return paths[-1], statistics.median(times)


def profile(step: Callable[[], None], hlo_text: str, steps: int,
            logdir: Optional[str] = None, top: int = 15,
            peak_gbps: Optional[float] = None) -> dict:
  """Trace `steps` calls of `step` (which must block until done) and summarise them by the
  compiled module `hlo_text`. The trace stays in `logdir` if given (TensorBoard, XProf or
  Perfetto open it), else it goes to a temporary directory that is removed."""
  with tempfile.TemporaryDirectory() as scratch:
    path, step_time_s = trace_steps(step, steps, logdir or scratch)
    summary = summarize(op_times(path, hlo_text), hlo_text, steps, step_time_s, top, peak_gbps)
  if logdir:
    summary['trace'] = path
  return summary


def audit(hlo_text: str, min_f32_elements: Optional[int] = None) -> dict:
  """The compiled module's audit, no trace needed (clan_jax.perf.hlo_audit)."""
  return hlo_audit.audit(hlo_text, min_f32_elements)


format_audit = hlo_audit.format_audit


def format_profile(summary: dict, title: str = '', top_families: int = 8) -> str:
  """Categories, scopes and top ops as text, in milliseconds per step; then the audit."""
  op_ms, step_ms = summary['op_ms_per_step'], summary['step_ms']
  lines = [f'Where the step\'s time goes{" (" + title + ")" if title else ""}: '
           f'{summary["steps"]} traced steps on {", ".join(summary["planes"])}; '
           f'step {step_ms:.1f} ms wall (traced), ops {op_ms:.1f} ms, busy '
           f'{summary["busy_ms_per_step"]:.1f} ms per step']
  for category, ms in sorted(summary['categories'].items(), key=lambda item: -item[1]):
    lines.append(f'  {category:14} {ms:9.2f} ms  {100 * ms / op_ms:5.1f} %')
  if summary.get('scopes'):
    lines.append(op_scopes.format_scope_table(summary['scopes'], op_ms))
  lines.append('  top families (ops that differ only in their number):')
  for family in summary['top_families'][:top_families]:
    ms = family['ms_per_step']
    lines.append(f'  {ms:9.2f} ms  {100 * ms / op_ms:5.1f} %  {family["ops"]:4d} ops  '
                 f'{family["category"]:14} {family["family"]}')
  peak = summary.get('peak_gbps')
  lines.append(f'  top ops of {summary["ops"]} (GB/s: bytes read and written over the time'
               + (f'; * at >= {MEMORY_BOUND_FRACTION:.0%} of {peak:g} GB/s)' if peak else ')')
               + ':')
  for row in summary['top_ops']:
    rate = row.get('gb_per_s')
    rate = (f'{rate:7.1f}' if rate is not None else f'{"-":>7}') + (
        '*' if row.get('memory_bound') else ' ')
    lines.append(f'  {row["ms_per_step"]:9.2f} ms  {100 * row["ms_per_step"] / op_ms:5.1f} %  '
                 f'x{row["calls_per_step"]:<4g} {rate} GB/s  {row["category"]:14} {row["op"]}')
  if peak:
    bound = summary['memory_bound']
    lines.append(f'  memory-bound ops: {bound["ops"]}, {bound["ms_per_step"]:.2f} ms per step')
  if summary.get('audit'):
    lines.append(hlo_audit.format_audit(summary['audit']))
  return '\n'.join(lines)
