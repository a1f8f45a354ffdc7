"""clan_jax.config.print_config: `main.py --print_config` lists every key with its value and
its help from the one source of each field (fields.py, configs/default.py's comments)."""

import re

from helpers.commands import run_cli

from clan_jax.config.print_config import comment_helps, format_config
from clan_jax.models.fields import ModelConfig


def _line_of(output: str, key: str) -> str:
  return next(line for line in output.splitlines() if line.split()[:1] == [key])


def test_print_config_lists_the_resolved_config_with_help_and_exits_0():
  result = run_cli('main.py', '--config=configs/demo.py', '--config.model.depth=34',
                   '--print_config')
  depth = _line_of(result.stdout, 'model.depth')
  # The override applied; the help is fields.py's.
  assert re.fullmatch(r'  model\.depth +34 +(.*)', depth).group(1) == (
      ModelConfig.__dataclass_fields__['depth'].metadata['help'])
  rate = _line_of(result.stdout, 'optimizer.learning_rate')
  assert rate.split()[1] == '0.002'  # configs/demo.py's rate.
  assert 'New layers (CLCA, CLSA, heads' in rate  # configs/default.py's comment.
  assert 'synthetic' in _line_of(result.stdout, 'dataset.name')
  assert all(len(line) <= 100 for line in result.stdout.splitlines())
  assert result.stderr == ''


def test_print_config_needs_a_config():
  result = run_cli('main.py', '--print_config', check_returncode=2)
  assert result.stderr == 'error: --config is required, e.g. --config=configs/default.py.\n'


def test_comment_helps_reads_the_comments_above_and_at_the_end_of_each_assignment():
  source = ('def get_config():\n'
            '  config = {}\n'
            '  # Why the rate\n'
            '  # is this.\n'
            '  optimizer.rate = 0.1  # Per image.\n'
            '  x = 1  # Not a key.\n'
            '  config.seed = 0\n'
            '  config.init.path = ""  # A file.\n')
  assert comment_helps(source) == {'optimizer.rate': 'Why the rate is this. Per image.',
                                   'init.path': 'A file.'}


def test_format_config_groups_by_section_and_keeps_a_field_dict_whole():
  config = {'seed': 0, 'model': {'weights': {'a': 1.0}, 'depth': 18}}
  text = format_config(config, {'model.weights': 'Loss weights.', 'seed': 'The seed.'})
  blocks = text.split('\n\n')
  assert blocks[0].splitlines() == ['run', '  seed  0                 The seed.']
  assert blocks[1].splitlines() == ['model', "  model.weights  {'a': 1.0}        Loss weights.",
                                    '  model.depth    18']
