"""Which part of the model each op of a compiled step belongs to, from the HLO metadata.

JAX writes each op's op_name as its trace path, e.g.
`jit(train_step)/transpose(jvp(CLAN))/backbone/layer1_0/bn1/mul`: the flax module path
(backbone/layer1_0/bn1), the pass (jvp(...) forward, transpose(jvp(...)) backward,
.../checkpoint/rematted_computation/... the forward recomputed by remat), and since jax 0.5
a stack frame whose innermost Python function says what code emitted it (optax's, the loss's).
SCOPE_RULES maps `op_name @ path.py:function` to a scope; PHASES are the passes.

An op that XLA created without metadata (XLA:CPU's weight-gradient convolutions, copies of
the state) takes, in turn: the majority of its fused instructions'; the scope of the weights
its result has the shape of (a weight gradient), if they agree; its operands' (the latest
pass among them, the commonest scope in that pass); else `other`.
"""

import collections
import re
from typing import Optional

from clan_jax.perf import hlo_module

# (regex searched in 'op_name @ path.py:function', scope; \1 from the regex), first match wins.
SCOPE_RULES = (
    (r'/clca_layer\d', 'clca'),
    (r'/clsa_layer\d|\._spatial_attention/', 'clsa'),
    (r'\._heads/|\._fuse/|/heads_\w+/|/fc/|@ .*resnet\.py:global_average_pool', 'heads'),
    (r'/backbone/bn1/', 'stem/bn'),
    (r'/backbone/conv1/', 'stem/conv'),
    (r'/layer(\d)_\d+/(?:downsample_)?bn\d*/', r'layer\1/bn'),
    (r'/layer(\d)_\d+/(?:downsample_)?conv\d*/', r'layer\1/conv'),
    # A block's residual add and ReLUs are in its BatchNorms (BatchNorm(relu=True)): what
    # is left here is what a future block adds outside them.
    (r'/layer(\d)_\d+/', r'layer\1/other'),
    (r'/backbone/', 'stem/other'),  # The stem's max pool (its ReLU is in bn1).
    (r'log_softmax|_one_hot|@ .*/loss\.py:', 'loss'),
    (r'@ .*(?:/optax/|/optim\.py:|/steps\.py:train_step\.<locals>\.<lambda>)', 'optimizer'),
    (r'@ .*/steps\.py:(?:train|eval)_step$', 'metrics'),  # Accuracy, the step count.
    (r'@ .*/preprocess\.py:', 'input'),
    (r'^state\.|^batch\[', 'state'),  # Copies of the step's arguments.
    (r'jvp\(|/CLAN/|/ResNetClassifier/', 'model/other'),
)
# The scopes' order in tables (by the part before '/'); those not named here come last.
SCOPE_ORDER = ('input', 'stem', 'layer1', 'layer2', 'layer3', 'layer4', 'clca', 'clsa',
               'heads', 'model', 'loss', 'optimizer', 'metrics', 'state', 'other', 'unattributed')
PHASES = ('forward', 'backward', 'recompute', 'optimizer', 'other')
_LATER = {phase: index for index, phase in enumerate(('other', 'forward', 'recompute',
                                                       'backward', 'optimizer'))}
_COMPILED_RULES = tuple((re.compile(pattern), scope) for pattern, scope in SCOPE_RULES)


def scope_of(op_name: str, source: str = '') -> str:
  """The scope of an op_name (and 'path.py:function' of the code that emitted it)."""
  subject = f'{op_name} @ {source}'
  for pattern, scope in _COMPILED_RULES:
    match = pattern.search(subject)
    if match:
      return match.expand(scope)
  return 'other'


def phase_of(op_name: str, scope: str) -> str:
  if 'rematted_computation' in op_name:
    return 'recompute'
  if 'transpose(' in op_name:
    return 'backward'
  if scope == 'optimizer':
    return 'optimizer'
  if 'jvp(' in op_name or scope not in ('input', 'metrics', 'state', 'other'):
    return 'forward'
  return 'other'


def order_key(scope: str) -> tuple:
  head = scope.split('/')[0]
  return (SCOPE_ORDER.index(head) if head in SCOPE_ORDER else len(SCOPE_ORDER), scope)


def _named(instruction: hlo_module.Instruction) -> tuple[str, str]:
  scope = scope_of(instruction.op_name, instruction.source)
  return scope, phase_of(instruction.op_name, scope)


def _parameter_path(op_name: str) -> str:
  """"state.params['backbone']['layer1_0']['conv1']['kernel']" -> '/backbone/layer1_0/conv1/
  kernel/' (the quotes may come escaped)."""
  return '/' + ''.join(f'{key}/' for key in re.findall(r"\[\\?'([^'\\]*)\\?'\]", op_name))


def _weight_scopes(module: hlo_module.Module) -> dict[tuple[int, ...], Optional[str]]:
  """{sorted dims of a weight: its scope, or None if weights of that shape differ in it}."""
  scopes = {}
  for instruction in module.body(module.entry):
    if instruction.opcode == 'parameter' and instruction.op_name.startswith('state.params'):
      scope = scope_of(_parameter_path(instruction.op_name))
      for _, dims, _ in hlo_module.arrays(instruction.shape):
        key = tuple(sorted(dims))
        scopes[key] = scope if scopes.get(key, scope) == scope else None
  return scopes


def instruction_scopes(module: hlo_module.Module) -> dict[str, tuple[str, str]]:
  """{name: (scope, phase)} of every executed instruction of the module."""
  weights = _weight_scopes(module)
  trains = any('transpose(' in i.op_name for i in module.instructions.values())
  memo: dict[str, Optional[tuple[str, str]]] = {}

  def resolve(name: str, depth: int) -> Optional[tuple[str, str]]:
    if name in memo:
      return memo[name]
    instruction = module.instructions.get(name)
    if instruction is None or depth > 12:
      return None
    memo[name] = None  # A cycle guard while this one resolves.
    memo[name] = result = _resolve(instruction, depth)
    return result

  def _resolve(instruction, depth) -> Optional[tuple[str, str]]:
    if instruction.opcode in ('parameter', 'constant'):
      return ('state', 'other') if instruction.op_name else None
    if instruction.op_name:
      return _named(instruction)
    fused = collections.Counter(_named(i) for i in module.fused(instruction) if i.op_name)
    if fused:
      return fused.most_common(1)[0][0]
    for _, dims, _ in hlo_module.arrays(instruction.shape):
      scope = weights.get(tuple(sorted(dims)))
      if scope and instruction.opcode not in ('copy', 'copy-start'):
        return scope, 'backward' if trains else 'forward'
    inputs = [r for r in (resolve(o, depth + 1) for o in instruction.operands) if r]
    model = [r for r in inputs if r[0] != 'state'] or inputs
    if not model:
      return None
    latest = max((phase for _, phase in model), key=_LATER.get)
    scopes = collections.Counter(scope for scope, phase in model if phase == latest)
    return scopes.most_common(1)[0][0], latest

  return {i.name: resolve(i.name, 0) or ('other', 'other') for i in module.executed()}


def scope_table(op_ms: dict[str, float], module: hlo_module.Module) -> dict[str, dict]:
  """{scope: {phase: ms}} of ops' times (op name -> ms per step); an op the module does not
  name (a library kernel inside a CUDA graph) is 'unattributed'."""
  scopes = instruction_scopes(module)
  table: dict[str, dict] = {}
  for op, ms in op_ms.items():
    scope, phase = scopes.get(op, ('unattributed', 'other'))
    row = table.setdefault(scope, {})
    row[phase] = row.get(phase, 0.0) + ms
  return dict(sorted(table.items(), key=lambda item: order_key(item[0])))


def format_scope_table(table: dict[str, dict], total_ms: float) -> str:
  """The table as text: ms per step by scope and phase, with BatchNorm and convolution
  totals over the backbone."""
  phases = [p for p in PHASES if any(p in row for row in table.values())]
  lines = ['  by scope (ms per step)' + ''.join(f'{p:>11}' for p in phases) +
           f'{"total":>10}{"%":>7}']

  def line(label: str, row: dict) -> str:
    cells = ''.join(f'{row[p]:11.2f}' if p in row else f'{"-":>11}' for p in phases)
    total = sum(row.values())
    return f'  {label:22}{cells}{total:10.2f}{100 * total / total_ms if total_ms else 0:7.1f}'

  for scope, row in table.items():
    lines.append(line(scope, row))
  for part, label in (('bn', 'backbone BatchNorm'), ('conv', 'backbone convolution')):
    rows = [row for scope, row in table.items() if scope.endswith('/' + part)]
    if rows:
      lines.append(line(label, {p: sum(r.get(p, 0.0) for r in rows) for p in phases
                                if any(p in r for r in rows)}))
  return '\n'.join(lines)
