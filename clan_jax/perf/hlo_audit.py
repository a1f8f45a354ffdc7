"""An audit of a compiled step's module (`compiled.as_text()`), no trace needed: what XLA
made of the model on this backend.

    report = hlo_audit.audit(compiled.as_text())
    print(hlo_audit.format_audit(report))

- convolutions by kind (forward, backward-input, backward-filter), implementation (cuDNN's
  custom calls on a GPU, whose targets name the kind; XLA's own convolution, alone or in a
  fusion such as XLA:CPU's YNNPACK one, whose kind comes from its pass: a backward one whose
  result has a weight's shape computes that weight's gradient), dim_labels layout, window and
  the kernel's input and output features;
- GEMMs by implementation: cuBLAS / cuBLASLt custom calls, Triton or cuDNN GEMM fusions,
  oneDNN calls, XLA's dot (alone or fused), and how many of the fusions take a slice inside;
- transposes (a transpose, or a copy that changes the layout, alone or fused into compute) and
  plain copies: count and bytes written;
- float32 buffers of activation size: results in f32 with at least `min_f32_elements`
  elements (by default as many as the smallest input of a forward BatchNorm reduction) that
  are not weight-shaped;
- reductions per BatchNorm: the reduce instructions whose op_name lies in a bn module, per
  module and pass, and the kernels (executed ops) that hold them.
"""

import collections
import re
from typing import Optional

from clan_jax.perf import hlo_module, op_scopes

_CUDNN_CONVOLUTIONS = {'__cudnn$convForward': 'forward', '__cudnn$convForwardGraph': 'forward',
                       '__cudnn$convBiasActivationForward': 'forward',
                       '__cudnn$convBackwardInput': 'backward-input',
                       '__cudnn$convBackwardFilter': 'backward-filter'}
_FUSION_IMPLEMENTATIONS = (  # A fusion's backend kind -> the implementation of what it fuses.
    ('triton', 'triton'), ('cudnn', 'cudnn fusion'), ('ynn', 'ynn fusion'),
    ('onednn', 'onednn fusion'))
_MOVES = ('transpose', 'copy', 'copy-start')
_MOVEMENT = {'transpose', 'copy', 'copy-start', 'copy-done', 'bitcast', 'reshape', 'broadcast',
             'slice', 'dynamic-slice', 'concatenate', 'pad', 'reverse', 'parameter', 'constant',
             'tuple', 'get-tuple-element'}
_BN_MODULE = re.compile(r'(?:^|/)([\w.]+)/((?:downsample_)?bn\d*)/')
DEFAULT_MIN_F32_ELEMENTS = 1 << 16  # Without a BatchNorm to size activations by.
NARROW_FEATURES = 8  # Tensor cores want multiples of 8 features (bf16).


def audit(hlo_text: str, min_f32_elements: Optional[int] = None) -> dict:
  """The audit of a compiled module's text (JSON-ready)."""
  return audit_module(hlo_module.parse(hlo_text), min_f32_elements)


def audit_module(module: hlo_module.Module, min_f32_elements: Optional[int] = None) -> dict:
  """The audit of a parsed module."""
  scopes = op_scopes.instruction_scopes(module)
  executed = module.executed()
  weights = module.parameter_shapes()
  batch_norms = _batch_norm_reductions(module, executed)
  smallest_input = batch_norms.pop('smallest_input')
  if min_f32_elements is None:
    min_f32_elements = smallest_input or DEFAULT_MIN_F32_ELEMENTS
  convolutions = [c for c in (_convolution(module, op, scopes[op.name], weights)
                              for op in executed) if c]
  gemms = [g for g in (_gemm(module, op, scopes[op.name]) for op in executed) if g]
  return {'instructions': len(executed), 'convolutions': convolutions,
          'convolution_kinds': dict(collections.Counter(c['kind'] for c in convolutions)),
          'gemms': gemms, 'gemm_implementations': dict(collections.Counter(
              g['implementation'] for g in gemms)),
          **_movements(module, executed),
          'f32_buffers': _f32_buffers(executed, scopes, weights, min_f32_elements),
          'batch_norm_reductions': batch_norms}


# ------------------------------------------------------------------------- convolutions

def _backend_kind(op: hlo_module.Instruction) -> str:
  kind = re.search(r'"kind"\s*:\s*"([^"]+)"', op.attributes)
  return kind.group(1) if kind else ''


def _fusion_implementation(op: hlo_module.Instruction) -> str:
  kind = _backend_kind(op).lower()
  for word, implementation in _FUSION_IMPLEMENTATIONS:
    if word in kind:
      return implementation
  return 'xla fusion'


def _convolution(module, op, scope_phase, weights) -> Optional[dict]:
  scope, phase = scope_phase
  if op.opcode == 'custom-call':
    kind = _CUDNN_CONVOLUTIONS.get(op.attribute('custom_call_target') or '')
    conv, implementation = op, 'cudnn'
  elif op.opcode in ('convolution', 'fusion'):
    conv = op if op.opcode == 'convolution' else next(
        (i for i in module.fused(op) if i.opcode == 'convolution'), None)
    implementation = 'xla' if op.opcode == 'convolution' else _fusion_implementation(op)
    kind = 'unknown' if conv else None
    if conv and phase in ('forward', 'recompute'):
      kind = 'forward'
    elif conv and phase == 'backward':
      dims = next((d for _, d, _ in hlo_module.arrays(conv.shape)), ())
      kind = 'backward-filter' if tuple(sorted(dims)) in weights else 'backward-input'
  else:
    return None
  if not kind:
    return None
  _, rhs, _ = _dim_labels(conv.attribute('dim_labels') or '')
  kernel_shape = conv.shape if kind == 'backward-filter' and implementation == 'cudnn' else (
      module.shape_of(conv.operands[1]) if len(conv.operands) > 1 else '')
  kernel = next((d for _, d, _ in hlo_module.arrays(kernel_shape)), ())
  features = [kernel[rhs.index(label)] if label in rhs and len(kernel) == len(rhs) else None
              for label in 'io']
  return {'name': op.name, 'kind': kind, 'implementation': implementation, 'scope': scope,
          'phase': phase, 'layout': conv.attribute('dim_labels') or '',
          'window': _window(conv.attribute('window') or ''), 'features_in': features[0],
          'features_out': features[1], 'shape': op.shape}


def _dim_labels(labels: str) -> tuple[str, str, str]:
  """'b01f_01io->b01f' -> ('b01f', '01io', 'b01f')."""
  match = re.match(r'(\w+)_(\w+)->(\w+)', labels)
  return match.groups() if match else ('', '', '')


def _window(window: str) -> str:
  """'{size=3x3 stride=2x2 pad=1_1x1_1}' -> '3x3/2x2'; '3x3' with stride 1."""
  size = re.search(r'size=([\dx]+)', window)
  stride = re.search(r'stride=([\dx]+)', window)
  text = size.group(1) if size else '?'
  return f'{text}/{stride.group(1)}' if stride else text


# -------------------------------------------------------------------------------- GEMMs

def _gemm(module, op, scope_phase) -> Optional[dict]:
  implementation, fused = None, []
  if op.opcode == 'dot':
    implementation = 'xla dot'
  elif op.opcode == 'custom-call':
    target = (op.attribute('custom_call_target') or '').lower()
    if target.startswith('__cublas$lt$matmul'):
      implementation = 'cublasLt'
    elif target == '__cublas$gemm':
      implementation = 'cublas'
    elif 'onednn' in target and 'matmul' in target:
      implementation = 'onednn'
    elif 'gemm' in target or 'matmul' in target:
      implementation = target
  elif op.opcode == 'fusion':
    fused = module.fused(op)
    if any(i.opcode == 'dot' for i in fused):
      implementation = _fusion_implementation(op)
  if not implementation:
    return None
  return {'name': op.name, 'implementation': implementation, 'scope': scope_phase[0],
          'phase': scope_phase[1], 'shape': op.shape,
          'slice_inside': any(i.opcode in ('slice', 'dynamic-slice') for i in fused)}


# ------------------------------------------------------------- transposes and copies

def _layout(shape: str) -> tuple:
  return next((layout for _, _, layout in hlo_module.arrays(shape)), ())


def _transposes(module, moves) -> bool:
  return any(m.opcode == 'transpose' or (
      m.opcode in ('copy', 'copy-start') and m.operands and
      _layout(m.shape) != _layout(module.shape_of(m.operands[0]))) for m in moves)


def _movements(module, executed) -> dict:
  """{'transposes': {count, bytes, fused_with_compute}, 'copies': {count, bytes}}."""
  transposes = {'count': 0, 'bytes': 0, 'fused_with_compute': 0}
  copies = {'count': 0, 'bytes': 0}
  for op in executed:
    fused = module.fused(op)
    moves = [op] if op.opcode in _MOVES else [i for i in fused if i.opcode in _MOVES]
    if not moves:
      continue
    computes = any(i.opcode not in _MOVEMENT for i in fused)
    if _transposes(module, moves):
      transposes['count'] += 1
      transposes['bytes'] += hlo_module.result_bytes(op)
      transposes['fused_with_compute'] += computes
    elif not computes:
      copies['count'] += 1
      copies['bytes'] += hlo_module.result_bytes(op)
  return {'transposes': transposes, 'copies': copies}


# ------------------------------------------------------------------ float32 buffers

def _f32_buffers(executed, scopes, weights, min_elements: int) -> dict:
  buffers = []
  for op in executed:
    for dtype, dims, _ in hlo_module.arrays(op.shape):
      count = hlo_module.elements(dims)
      if dtype == 'f32' and count >= min_elements and tuple(sorted(dims)) not in weights:
        scope, phase = scopes[op.name]
        buffers.append({'name': op.name, 'dims': list(dims), 'bytes': 4 * count,
                        'scope': scope, 'phase': phase})
  buffers.sort(key=lambda b: -b['bytes'])
  return {'min_elements': min_elements, 'count': len(buffers),
          'bytes': sum(b['bytes'] for b in buffers),
          'by_phase': dict(collections.Counter(b['phase'] for b in buffers)),
          'largest': buffers[:5]}


# ----------------------------------------------------------- BatchNorm reductions

def _batch_norm_reductions(module, executed) -> dict:
  """{bn module: {pass: {'reductions': n, 'kernels': n}}} and 'smallest_input' (elements of
  the smallest input of a forward BatchNorm reduction)."""
  found: dict[str, dict] = {}
  kernels = collections.defaultdict(set)
  smallest = None
  for op in executed:
    reduces = [op] if op.opcode == 'reduce' else [
        i for i in module.fused(op) if i.opcode == 'reduce']
    for reduce in reduces:
      match = _BN_MODULE.search(reduce.op_name)
      if not match:
        continue
      key = f'{match.group(1)}/{match.group(2)}'
      phase = op_scopes.phase_of(reduce.op_name, 'model')
      counts = found.setdefault(key, {}).setdefault(phase, {'reductions': 0, 'kernels': 0})
      outputs = len(reduce.operands) // 2 or 1  # A variadic reduce: inputs, then inits.
      counts['reductions'] += outputs
      kernels[(key, phase)].add(op.name)
      counts['kernels'] = len(kernels[(key, phase)])
      if phase == 'forward' and reduce.operands:
        size = sum(hlo_module.elements(d) for _, d, _ in
                   hlo_module.arrays(module.shape_of(reduce.operands[0])))
        smallest = size if smallest is None or 0 < size < smallest else smallest
  return {**found, 'smallest_input': smallest}


# ------------------------------------------------------------------------------ text

def format_audit(report: dict, title: str = '') -> str:
  lines = [f'Audit of the compiled module{" (" + title + ")" if title else ""}: '
           f'{report["instructions"]} executed ops']
  lines += _convolution_lines(report['convolutions'])
  gemms = report['gemms']
  sliced = sum(g['slice_inside'] for g in gemms)
  lines.append('  GEMMs: ' + (', '.join(f'{n} {impl}' for impl, n in sorted(
      report['gemm_implementations'].items(), key=lambda item: -item[1])) or 'none') +
      (f' ({sliced} fusions with a slice inside)' if sliced else ''))
  transposes, copies = report['transposes'], report['copies']
  lines.append(f'  transposes: {transposes["count"]} ({transposes["fused_with_compute"]} fused '
               f'with compute), {_mb(transposes["bytes"])} written; copies: {copies["count"]}, '
               f'{_mb(copies["bytes"])} written')
  f32 = report['f32_buffers']
  phases = ', '.join(f'{n} {phase}' for phase, n in sorted(f32['by_phase'].items()))
  lines.append(f'  f32 buffers of >= {f32["min_elements"]:,} elements (not weight-shaped): '
               f'{f32["count"]}, {_mb(f32["bytes"])}' + (f' ({phases})' if phases else ''))
  lines += _batch_norm_lines(report['batch_norm_reductions'])
  return '\n'.join(lines)


def _mb(count: int) -> str:
  return f'{count / 1e6:.1f} MB'


def _convolution_lines(convolutions: list[dict]) -> list[str]:
  if not convolutions:
    return ['  convolutions: none']
  kinds = collections.Counter(c['kind'] for c in convolutions)
  lines = ['  convolutions: ' + ', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))]
  groups = collections.defaultdict(collections.Counter)
  for c in convolutions:
    groups[(c['kind'], c['implementation'], c['layout'])][c['window']] += 1
  for (kind, implementation, layout), windows in sorted(groups.items()):
    lines.append(f'    {sum(windows.values()):4d} {kind:15} {implementation:12} {layout:18} ' +
                 ', '.join(f'{w} x{n}' for w, n in windows.most_common()))
  narrow = collections.Counter((c['kind'], c['window'], c['features_in'], c['features_out'])
                               for c in convolutions if _narrow(c))
  if narrow:
    lines.append(f'    fewer than {NARROW_FEATURES} features: ' + ', '.join(
        f'{kind} {window} {fin}->{fout} x{n}' for (kind, window, fin, fout), n in narrow.items()))
  return lines


def _narrow(convolution: dict) -> bool:
  """Fewer than NARROW_FEATURES input or output features, for the convolutions whose kernel
  is the weight: cuDNN's, and XLA's forward ones in batch-first layout (XLA's own backward
  and batch-last ones run with their operands' roles swapped)."""
  if convolution['implementation'] != 'cudnn' and not (
      convolution['kind'] == 'forward' and convolution['layout'].startswith('b')):
    return False
  features = (convolution['features_in'], convolution['features_out'])
  return min(f or NARROW_FEATURES for f in features) < NARROW_FEATURES


def _batch_norm_lines(batch_norms: dict) -> list[str]:
  if not batch_norms:
    return ['  BatchNorm reductions: none found']
  signatures = collections.defaultdict(list)
  for module, passes in batch_norms.items():
    signature = tuple((phase, counts['reductions'], counts['kernels'])
                      for phase, counts in sorted(passes.items()))
    signatures[signature].append(module)
  lines = [f'  BatchNorm reductions per module ({len(batch_norms)} modules; '
           'reductions/kernels per pass):']
  for signature, modules in sorted(signatures.items(), key=lambda item: -len(item[1])):
    passes = ', '.join(f'{phase} {n}/{k}' for phase, n, k in signature)
    names = ', '.join(modules[:3]) + (', ...' if len(modules) > 3 else '')
    lines.append(f'    {len(modules):4d} x {passes}  ({names})')
  return lines
