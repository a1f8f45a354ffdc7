"""The text of a compiled XLA module (`compiled.as_text()`) read into instructions: each one's
computation, result shape, opcode, operands, attributes and metadata (the JAX op_name and the
innermost Python frame of its source), and the bytes of shapes.

Pure text, no JAX: it reads a module compiled on any backend, or a hand-written fragment.
Instruction names are unique in a module, so an operand is looked up by name in any
computation (a fused computation's parameters included)."""

import dataclasses
import re
from typing import Iterator, Optional

# Bits per element of each array type (a tuple's or token's elements have none).
_DTYPE_BITS = {'pred': 8, 's2': 2, 'u2': 2, 's4': 4, 'u4': 4, 's8': 8, 'u8': 8, 's16': 16,
               'u16': 16, 'f16': 16, 'bf16': 16, 's32': 32, 'u32': 32, 'f32': 32, 's64': 64,
               'u64': 64, 'f64': 64, 'c64': 64, 'c128': 128}
_ARRAY = re.compile(r'([a-z][a-z0-9]*)\[([^\]]*)\](?:\{([^}]*)\})?')
_HEADER = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_INSTRUCTION = re.compile(r'^\s+(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$')
_OP_NAME = re.compile(r'\bop_name="((?:[^"\\]|\\.)*)"')
_SOURCE_FILE = re.compile(r'\bsource_file="((?:[^"\\]|\\.)*)"')
_STACK_FRAME = re.compile(r'\bstack_frame_id=(\d+)')
_FRAME_TABLES = ('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames')
# Instructions that run nothing of their own: they name, bundle or reinterpret buffers.
PLUMBING = frozenset({'parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast'})
# Opcodes whose called computations run as part of the program (not fused bodies or the
# scalar computations of a reduce or a scatter).
_CONTROL = frozenset({'while', 'conditional', 'call', 'async-start'})


@dataclasses.dataclass(frozen=True)
class Instruction:
  name: str
  computation: str
  shape: str  # 'f32[2,8]{1,0}', or a tuple '(f32[2,8]{1,0}, u8[0]{0})'.
  opcode: str
  operands: tuple[str, ...]
  attributes: str  # The text after the operand list: 'kind=kLoop, calls=%f, metadata={...}'.
  op_name: str  # JAX's op_name (the first of several joined by ';'); '' without metadata.
  source: str  # 'path.py:function' of the innermost Python frame; '' when not recorded.

  def attribute(self, key: str) -> Optional[str]:
    """The value of `key=` in the attributes: a name, a "string" (unquoted) or a {block}."""
    match = re.search(r'(?:^|[\s,])' + re.escape(key) + r'=', self.attributes)
    if not match:
      return None
    return _attribute_value(self.attributes[match.end():])

  @property
  def called(self) -> list[str]:
    """Computations this instruction calls (calls=, to_apply=, body=, condition=, ...)."""
    names = re.findall(r'(?:calls|to_apply|body|condition|true_computation|false_computation)'
                       r'=%?([\w.\-]+)', self.attributes)
    branches = self.attribute('branch_computations')
    if branches:
      names += re.findall(r'%?([\w.\-]+)', branches.strip('{}'))
    return names


def _attribute_value(text: str) -> str:
  if text.startswith('"'):
    match = re.match(r'"((?:[^"\\]|\\.)*)"', text)
    return match.group(1) if match else ''
  if text[:1] in '{[(':
    return text[:_closing(text) + 1]
  return re.match(r'[^,\s]*', text).group(0)


def _closing(text: str) -> int:
  """Index of the bracket that closes text[0] (quoted strings skipped); len - 1 if none."""
  depth, quoted, escaped = 0, False, False
  for index, char in enumerate(text):
    if quoted:
      if escaped:
        escaped = False
      elif char == '\\':
        escaped = True
      elif char == '"':
        quoted = False
    elif char == '"':
      quoted = True
    elif char in '{[(':
      depth += 1
    elif char in '}])':
      depth -= 1
      if depth == 0:
        return index
  return len(text) - 1


@dataclasses.dataclass
class Module:
  instructions: dict[str, Instruction]
  computations: dict[str, list[str]]  # Name -> its instructions' names in order.
  entry: str

  def body(self, computation: str) -> list[Instruction]:
    return [self.instructions[n] for n in self.computations.get(computation, [])]

  def fused(self, instruction: Instruction) -> list[Instruction]:
    """The instructions a fusion runs, those of nested fusions included ([] otherwise)."""
    if instruction.opcode != 'fusion':
      return []
    found, seen, stack = [], set(), list(instruction.called[:1])
    while stack:
      computation = stack.pop()
      if computation in seen:
        continue
      seen.add(computation)
      for inner in self.body(computation):
        found.append(inner)
        if inner.opcode == 'fusion':
          stack.extend(inner.called[:1])
    return found

  def executed(self) -> list[Instruction]:
    """The instructions that run as the program's ops: the entry computation's and those of
    the computations that control flow calls (while, conditional, call), in order; no
    parameters, constants, tuples or bitcasts."""
    ops, seen, stack = [], set(), [self.entry]
    while stack:
      computation = stack.pop(0)
      if computation in seen:
        continue
      seen.add(computation)
      for instruction in self.body(computation):
        if instruction.opcode in _CONTROL:
          stack.extend(instruction.called)
        elif instruction.opcode not in PLUMBING:
          ops.append(instruction)
    return ops

  def shape_of(self, name: str) -> str:
    instruction = self.instructions.get(name)
    return instruction.shape if instruction else ''

  def parameter_shapes(self) -> set[tuple[int, ...]]:
    """The dimensions (sorted) of the entry's parameters: a weight's shape in any layout."""
    return {tuple(sorted(dims)) for i in self.body(self.entry) if i.opcode == 'parameter'
            for _, dims, _ in arrays(i.shape)}


def _split_shape(rest: str) -> tuple[str, str]:
  """('f32[2]{0}', 'add(%a, %b), ...') from the text after `name = `."""
  if rest.startswith('('):
    end = _closing(rest)
    return rest[:end + 1], rest[end + 1:].lstrip()
  shape, _, tail = rest.partition(' ')
  return shape, tail


def _parse_instruction(computation: str, name: str, rest: str, frames: dict) -> Instruction:
  shape, tail = _split_shape(rest)
  shape = re.sub(r'/\*.*?\*/', '', shape)  # Long tuples carry /*index=5*/ comments.
  match = re.match(r'([a-z][\w\-]*)\(', tail)
  opcode, operands, attributes = '', (), tail
  if match:
    opcode = match.group(1)
    inside = tail[match.end() - 1:]
    end = _closing(inside)
    operand_text, attributes = inside[1:end], inside[end + 1:].lstrip(', ')
    if opcode not in ('constant', 'parameter'):
      operands = tuple(re.findall(r'%([\w.\-]+)', operand_text) or
                       [part.split()[-1] for part in operand_text.split(',') if part.strip()])
  op_name = _OP_NAME.search(attributes)
  return Instruction(name=name, computation=computation, shape=shape, opcode=opcode,
                     operands=operands, attributes=attributes,
                     op_name=op_name.group(1).split(';')[0] if op_name else '',
                     source=_source(attributes, frames))


def _source(attributes: str, frames: dict) -> str:
  source_file = _SOURCE_FILE.search(attributes)
  if source_file:
    return source_file.group(1)
  frame = _STACK_FRAME.search(attributes)
  return frames.get(int(frame.group(1)), '') if frame else ''


def _frame_sources(lines: list[str]) -> dict[int, str]:
  """{stack frame id: 'path:function'} from the module's FileNames, FunctionNames,
  FileLocations and StackFrames tables (newer jaxlibs put these before the computations)."""
  tables, current = {}, None
  for line in lines:
    if line.strip() in _FRAME_TABLES:
      current = tables.setdefault(line.strip(), {})
    elif current is not None and re.match(r'^\d+ ', line):
      key, value = line.split(' ', 1)
      current[int(key)] = value.strip()
    else:
      current = None

  def field(text: str, key: str) -> int:
    match = re.search(key + r'=(\d+)', text)
    return int(match.group(1)) if match else -1

  sources = {}
  for frame, text in tables.get('StackFrames', {}).items():
    location = tables.get('FileLocations', {}).get(field(text, 'file_location_id'), '')
    path = tables.get('FileNames', {}).get(field(location, 'file_name_id'), '').strip('"')
    function = tables.get('FunctionNames', {}).get(field(location, 'function_name_id'), '')
    sources[frame] = f'{path}:{function.strip(chr(34))}' if path else ''
  return sources


def parse(hlo_text: str) -> Module:
  lines = hlo_text.splitlines()
  frames = _frame_sources(lines)
  instructions, computations, current, entry = {}, {}, None, ''
  for line in lines:
    if not line.startswith(' '):
      header = _HEADER.match(line)
      current = header.group(1) if header else None
      if current:
        computations[current] = []
        entry = current if line.startswith('ENTRY') else entry
      continue
    match = _INSTRUCTION.match(line)
    if match and current is not None:
      instruction = _parse_instruction(current, match.group(2), match.group(3), frames)
      instructions[instruction.name] = instruction
      computations[current].append(instruction.name)
  if not entry and computations:  # A fragment without ENTRY: its last computation.
    entry = list(computations)[-1]
  return Module(instructions, computations, entry)


# ---------------------------------------------------------------------------- shapes

def arrays(shape: str) -> Iterator[tuple[str, tuple[int, ...], tuple[int, ...]]]:
  """(dtype, dimensions, minor-to-major layout or ()) of each array in a shape or tuple."""
  for match in _ARRAY.finditer(shape):
    dtype, dims, layout = match.groups()
    if dtype not in _DTYPE_BITS and not dtype.startswith('f8'):
      continue  # token[] and the like.
    dimensions = tuple(int(d.replace('<=', '')) for d in dims.split(',') if d.strip())
    minor_to_major = (layout or '').split(':')[0]
    yield dtype, dimensions, tuple(int(d) for d in minor_to_major.split(',') if d.strip())


def elements(dims: tuple[int, ...]) -> int:
  count = 1
  for dim in dims:
    count *= dim
  return count


def array_bytes(dtype: str, dims: tuple[int, ...]) -> int:
  return elements(dims) * _DTYPE_BITS.get(dtype, 8) // 8


def shape_bytes(shape: str) -> int:
  return sum(array_bytes(dtype, dims) for dtype, dims, _ in arrays(shape))


def result_bytes(instruction: Instruction) -> int:
  """Bytes of what an instruction writes. A library call's tuple ends with its scratch
  workspace (u8/s8, e.g. cuDNN's and cuBLAS's), which is not data: it is left out."""
  parts = list(arrays(instruction.shape))
  if instruction.opcode == 'custom-call' and len(parts) > 1 and parts[-1][0] in ('u8', 's8'):
    parts = parts[:-1]
  return sum(array_bytes(dtype, dims) for dtype, dims, _ in parts)


def traffic_bytes(module: Module, instruction: Instruction) -> int:
  """Bytes an op reads and writes if it touches each operand and result once: its distinct
  operands' shapes plus its result's. An op that reads only a slice of an operand (a
  dynamic-slice inside a fusion) is counted as reading all of it."""
  read = sum(shape_bytes(module.shape_of(name)) for name in dict.fromkeys(instruction.operands))
  return read + result_bytes(instruction)
