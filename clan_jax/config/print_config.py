"""`--print_config`: every key of a config with its value and help, grouped by section.

One source per field's help: the model section's from clan_jax/models/fields.py (each
field's 'help'), dataset.synthetic's from SyntheticSpec's docstring, every other key's from
its comment in configs/default.py (the comment lines just above its assignment and the one
at its end), read with `ast` and `tokenize` so that default.py stays the one place that says
what a key means.
"""

import ast
import dataclasses
import importlib.util
import inspect
import io
import re
import textwrap
import tokenize
from typing import Any

from clan_jax.config.config_keys import dotted_items
from clan_jax.datasets.synthetic_images import SyntheticSpec
from clan_jax.models.fields import ModelConfig

WIDTH = 100
MAX_VALUE_WIDTH = 16  # A longer value puts its help on the next line.
TOP_LEVEL = 'run'  # The heading of the keys outside any section (batch_size, seed, ...).


def model_helps() -> dict[str, str]:
  return {f'model.{f.name}': f.metadata['help'] for f in dataclasses.fields(ModelConfig)}


def synthetic_helps() -> dict[str, str]:
  """The '  name: text' entries of SyntheticSpec's docstring (its fields' one description)."""
  helps, name = {}, None
  for line in (inspect.getdoc(SyntheticSpec) or '').splitlines():
    entry = re.match(r'^  (\w+): (.*)$', line)
    if entry and entry.group(1) in {f.name for f in dataclasses.fields(SyntheticSpec)}:
      name = entry.group(1)
      helps[f'dataset.synthetic.{name}'] = entry.group(2)
    elif name and line.startswith('    '):
      helps[f'dataset.synthetic.{name}'] += ' ' + line.strip()
    else:
      name = None
  return helps


def _dotted_target(node: ast.expr) -> str | None:
  # config.init.checkpoint -> 'init.checkpoint'; dataset.augment.flip -> 'dataset.augment.flip'
  # (each section function of default.py names its section's variable after the section).
  parts = []
  while isinstance(node, ast.Attribute):
    parts.insert(0, node.attr)
    node = node.value
  if not isinstance(node, ast.Name) or not parts:
    return None
  return '.'.join(parts if node.id == 'config' else [node.id, *parts])


def comment_helps(source: str) -> dict[str, str]:
  """{dotted key: its comment} for each `section.key = value  # comment` of a config file."""
  comments, code_lines = {}, set()
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments[token.start[0]] = token.string.lstrip('#').strip()
    elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
      code_lines.add(token.start[0])
  helps = {}
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, ast.Assign) or len(node.targets) != 1:
      continue
    key = _dotted_target(node.targets[0])
    if key is None:
      continue
    above, line = [], node.lineno - 1
    while line in comments and line not in code_lines:  # The comment lines just above.
      above.insert(0, comments[line])
      line -= 1
    trailing = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
    text = ' '.join(above + trailing)
    if text:
      helps[key] = text
  return helps


def default_config_helps() -> dict[str, str]:
  """The comments of configs/default.py (found as the recipes import it), or none."""
  spec = importlib.util.find_spec('configs.default')
  if spec is None or not spec.origin:
    return {}
  with open(spec.origin, encoding='utf-8') as f:
    return comment_helps(f.read())


def all_helps() -> dict[str, str]:
  return {**default_config_helps(), **synthetic_helps(), **model_helps()}


def _entry_lines(key: str, value: Any, help_text: str, key_width: int) -> list[str]:
  if hasattr(value, 'items'):  # A ConfigDict's repr spans lines; a dict's does not.
    value = dict(value.items())
  value_text = repr(tuple(value) if isinstance(value, list) else value)
  help_column = 2 + key_width + 2 + MAX_VALUE_WIDTH + 2
  first = f'  {key:<{key_width}}  {value_text}'
  if not help_text:
    return [first]
  if len(value_text) <= MAX_VALUE_WIDTH:
    first = f'  {key:<{key_width}}  {value_text:<{MAX_VALUE_WIDTH}}  '
    return _wrap(help_text, first, help_column)
  return [first] + _wrap(help_text, ' ' * help_column, help_column)


def _wrap(text: str, first_indent: str, column: int) -> list[str]:
  # Hyphenated words ('top-level') and paths stay whole.
  return textwrap.wrap(text, WIDTH, initial_indent=first_indent, subsequent_indent=' ' * column,
                       break_on_hyphens=False, break_long_words=False)


def format_config(config: Any, helps: dict[str, str] | None = None) -> str:
  """Every key of `config` with its value and help, aligned, grouped by section."""
  helps = all_helps() if helps is None else helps
  items = dotted_items(config, is_leaf=lambda key: key in helps)
  sections: dict[str, list[str]] = {}
  for key in items:
    sections.setdefault(key.split('.', 1)[0] if '.' in key else TOP_LEVEL, []).append(key)
  blocks = []
  for section, keys in sections.items():
    key_width = max(len(k) for k in keys)
    lines = [line for k in keys for line in _entry_lines(k, items[k], helps.get(k, ''), key_width)]
    blocks.append(f'{section}\n' + '\n'.join(lines))
  return '\n\n'.join(blocks)
