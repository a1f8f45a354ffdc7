"""clan_jax.base.cli: flag and config-override problems become one readable message."""

import subprocess
import sys

from helpers.commands import REPO_ROOT, run_cli


def _error_line(result) -> str:
  assert 'Traceback' not in result.stderr, result.stderr
  return result.stderr[result.stderr.index('error: '):]


def test_misspelled_key_is_named_with_the_suggestion():
  result = run_cli('main.py', '--config=configs/demo.py', '--config.batchsize=8',
                   check_returncode=2)
  assert _error_line(result).startswith(
      "error: unknown config key 'batchsize' (--config.batchsize=8); did you mean batch_size")


def test_a_command_without_print_config_says_where_to_find_it():
  result = run_cli('-m', 'clan_jax.summary', '--config=configs/demo.py', '--config.batchsize=8',
                   check_returncode=2)
  assert _error_line(result) == (
      "error: unknown config key 'batchsize' (--config.batchsize=8); did you mean batch_size? "
      'python main.py --config=configs/demo.py --print_config lists every config key with its '
      'value and help.\n')


def test_an_unknown_flag_points_to_helpfull():
  result = run_cli('main.py', '--config=configs/demo.py', '--bogus_flag=1', check_returncode=2)
  assert _error_line(result) == ("error: invalid command line: Unknown command line flag "
                                 "'bogus_flag'. Run with --helpfull to list the flags.\n")


def test_invalid_value_keeps_its_closing_quote():
  result = run_cli('main.py', '--config=configs/demo.py', '--config.batch_size=abc',
                   check_returncode=2)
  assert ("invalid literal for int() with base 10: 'abc'. --print_config lists every config "
          'key with its value and help.\n') in _error_line(result)


def test_config_outside_the_repository_says_where_to_run(tmp_path):
  # The recipes import configs.default, which Python finds only from the repository root;
  # this checkout's clan_jax, without its configs, is put on the path through a link.
  packages = tmp_path / 'packages'
  packages.mkdir()
  (packages / 'clan_jax').symlink_to(REPO_ROOT / 'clan_jax')
  result = subprocess.run([sys.executable, '-m', 'clan_jax.convert',
                           f'--config={REPO_ROOT / "configs" / "demo.py"}'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={'PATH': '', 'PYTHONPATH': str(packages)})
  assert result.returncode == 2, result.stderr
  message = _error_line(result)
  assert message.startswith("error: invalid command line: No module named 'configs' "
                            '(imported by the --config file)')
  assert 'PYTHONPATH' in message


def test_missing_config_file_is_named_without_librarys_internal_name():
  result = run_cli('main.py', '--config=configs/nope.py', '--workdir=/tmp/unused',
                   check_returncode=2)
  assert _error_line(result) == (
      "error: the --config file cannot be read: [Errno 2] No such file or directory: "
      "'configs/nope.py'. Give a config file such as configs/cub.py (a path from the current "
      'folder).\n')
