"""The package's layout (docs/ARCHITECTURE.md): commands at the top of clan_jax/, library code
in rooms by role, imports that flow one way, no import cycle, light imports where promised.

The rules are read from the source (every import, at the top or inside a function), so a
lazy import cannot hide a cycle or a dependency that runs the wrong way.
"""

import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest

from helpers.commands import REPO_ROOT

PACKAGE = REPO_ROOT / 'clan_jax'
COMMANDS = {'main', 'predict', 'convert', 'parity', 'summary', 'benchmark',
            'benchmark_pipeline', 'ablation', 'datasets.prepare'}
ROOMS = {'base', 'config', 'models', 'datasets', 'train', 'inference', 'pytorch', 'perf',
         'viz', 'experiments'}
# What each room may import of the package (besides itself); commands may import anything.
ALLOWED = {
    'base': set(),
    'config': {'base', 'models.fields', 'datasets'},
    'models': {'base.errors'},
    'datasets': {'base', 'config'},
    'train': {'base', 'config', 'datasets', 'models', 'pytorch.conversion', 'viz'},
    'viz': {'base', 'datasets'},
    'inference': {'base', 'config', 'datasets', 'models', 'pytorch.conversion', 'train', 'viz'},
    'pytorch': {'base', 'config', 'datasets', 'models'},
    'perf': {'base', 'config', 'datasets', 'models', 'pytorch', 'train'},
    'experiments': {'base'},
}


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def package_imports(path: pathlib.Path) -> set[str]:
  """The clan_jax modules `path` imports (without the 'clan_jax.' prefix), anywhere in it."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from clan_jax.train import loop` imports clan_jax.train.loop, a module.
      names = [f'{node.module}.{alias.name}' for alias in node.names] + [node.module]
    else:
      continue
    for name in names:
      if name.startswith('clan_jax.'):
        found.add(name.removeprefix('clan_jax.'))
  return found


def resolve(name: str, modules: set[str]) -> str | None:
  """The module a dotted import names: itself, or its longest prefix that is a module."""
  while name and name not in modules:
    name = name.rpartition('.')[0]
  return name or None


@pytest.fixture(scope='module')
def graph() -> dict[str, set[str]]:
  files = {module_name(p): p for p in PACKAGE.rglob('*.py')}
  modules = set(files)
  return {name: {m for m in map(lambda n: resolve(n, modules), package_imports(path))
                 if m and m != name}
          for name, path in files.items()}


def test_top_level_modules_are_the_commands():
  top = {p.stem for p in PACKAGE.glob('*.py')} - {'__init__'}
  assert top == {c for c in COMMANDS if '.' not in c}
  assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != '__pycache__'} == ROOMS
  for command in COMMANDS:
    source = (PACKAGE / f'{command.replace(".", "/")}.py').read_text()
    assert 'def main(' in source and 'def run(' in source, command  # run: the console command.


def test_console_commands_name_the_commands():
  text = (REPO_ROOT / 'pyproject.toml').read_text()
  for command in COMMANDS:
    assert f'"clan_jax.{command}:run"' in text, command


def test_no_import_cycle(graph):
  # Tarjan's strongly connected components: any component of two or more is a cycle.
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for target in graph[node]:
      if target not in index:
        visit(target)
        low[node] = min(low[node], low[target])
      elif target in on_stack:
        low[node] = min(low[node], index[target])
    if low[node] == index[node]:
      component = set()
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.add(member)
        if member == node:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for node in graph:
    if node not in index:
      visit(node)
  assert cycles == []


def room_of(module: str) -> str | None:
  room = module.split('.')[0]
  return room if room in ROOMS else None


def test_rooms_import_only_what_lies_below_them(graph):
  wrong = []
  for module, targets in graph.items():
    room = room_of(module)
    if room is None or module in COMMANDS:
      continue
    for target in targets:
      if room_of(target) == room:
        continue
      if target in COMMANDS or not any(target == a or target.startswith(a + '.')
                                       for a in ALLOWED[room]):
        wrong.append(f'{module} -> {target}')
  assert wrong == []


def test_the_twin_imports_no_jax():
  imports = set()
  for node in ast.walk(ast.parse((PACKAGE / 'pytorch' / 'twin.py').read_text())):
    if isinstance(node, ast.Import):
      imports |= {a.name.split('.')[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      imports.add(node.module.split('.')[0])
  assert not imports & {'jax', 'flax', 'optax', 'orbax'}


BLOCK_HEAVY = textwrap.dedent('''
    import importlib.abc, sys

    class Blocked(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
          raise ImportError(f'{{name}} is blocked (not on a bare GPU image)')

    sys.meta_path.insert(0, Blocked())
''')


@pytest.mark.parametrize('modules, blocked', [
    # The benchmark runs on a GPU image without clu, TensorFlow or ml_collections.
    (['clan_jax.benchmark', 'clan_jax.perf.step_benchmark', 'clan_jax.models',
      'clan_jax.convert', 'clan_jax.train.steps', 'clan_jax.train.optim'],
     ['tensorflow', 'tensorflow_datasets', 'clu', 'ml_collections', 'torch']),
    # Config fields and validation are pure Python: no JAX, flax or TensorFlow.
    (['clan_jax.models.fields', 'clan_jax.config.validation', 'clan_jax.base.cli',
      'clan_jax.config.config_keys', 'clan_jax.config.print_config'],
     ['jax', 'flax', 'tensorflow', 'clu', 'torch']),
])
def test_light_imports(modules, blocked):
  code = BLOCK_HEAVY.format(BLOCKED=set(blocked)) + '\n'.join(f'import {m}' for m in modules)
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stderr[-2000:]


def test_loading_a_recipe_imports_no_jax():
  code = ('import sys\nimport configs.cub\n'
          "print(sorted(m for m in ('jax', 'flax', 'tensorflow') if m in sys.modules))")
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True)
  assert result.stdout.strip() == '[]'


def test_a_console_command_finds_the_recipes_from_the_repository_root(tmp_path):
  """`clan-summary --config=configs/demo.py` works as `python -m clan_jax.summary` does."""
  script = tmp_path / 'clan-summary'  # What pip writes for [project.scripts].
  script.write_text('import sys\nfrom clan_jax.summary import run\nsys.exit(run())\n')
  result = subprocess.run([sys.executable, str(script), '--config=configs/demo.py',
                           '--config.model.bogus=1'], cwd=REPO_ROOT, capture_output=True,
                          text=True)
  # The recipe (which imports configs.default) loaded; the misspelled key is the message.
  assert result.returncode == 2 and 'unknown config key' in result.stderr, result.stderr
  assert 'No module named' not in result.stderr
