"""clan_jax.base.workdirs: what a training workdir is, and the one a path was meant to be."""

import json

import pytest

from clan_jax.base import workdirs
from clan_jax.base.errors import UserError


def make_workdir(path, config=None):
  path.mkdir(parents=True)
  (path / 'config.json').write_text(json.dumps(config or {'seed': 0}))
  (path / 'classes.json').write_text('{"classes": ["a", "b"]}')
  (path / 'checkpoints').mkdir()
  return path


@pytest.fixture
def runs(tmp_path, monkeypatch):
  """runs/demo and runs/ablation/clan/seed0 (workdirs), runs/empty; the current folder."""
  monkeypatch.chdir(tmp_path)
  make_workdir(tmp_path / 'runs' / 'demo')
  make_workdir(tmp_path / 'runs' / 'ablation' / 'clan' / 'seed0')
  (tmp_path / 'runs' / 'empty').mkdir()
  return tmp_path / 'runs'


def test_a_workdir_holds_the_files_training_writes_first(runs):
  assert workdirs.is_workdir(runs / 'demo')
  assert not workdirs.is_workdir(runs) and not workdirs.is_workdir(runs / 'empty')
  (runs / 'empty' / 'config.json').write_text('{}')  # Any project's config.json: not a run.
  assert not workdirs.is_workdir(runs / 'empty')


def test_a_folder_of_runs_names_them_and_a_folder_inside_one_names_it(runs):
  assert workdirs.did_you_mean('runs') == (
      ' Did you mean runs/ablation/clan/seed0 or runs/demo?')
  assert workdirs.did_you_mean('runs/demo/checkpoints') == ' Did you mean runs/demo?'
  assert workdirs.did_you_mean(str(runs / 'demo' / 'checkpoints')) == ' Did you mean runs/demo?'
  assert workdirs.did_you_mean('runs/empty') == ''


def test_the_search_names_a_few_skips_hidden_folders_and_stops_at_its_depth(tmp_path,
                                                                           monkeypatch):
  monkeypatch.chdir(tmp_path)
  for name in 'abcde':
    make_workdir(tmp_path / 'many' / name)
  make_workdir(tmp_path / 'hidden' / '.cache' / 'run')
  make_workdir(tmp_path / 'deep' / '1' / '2' / '3' / 'run')
  assert workdirs.did_you_mean('many') == (
      ' Did you mean many/a, many/b or many/c (and 2 more)?')
  assert workdirs.did_you_mean('hidden') == '' and workdirs.did_you_mean('deep') == ''


def test_a_path_outside_the_current_folder_is_shown_absolute(runs, tmp_path, monkeypatch):
  monkeypatch.chdir(runs / 'empty')
  assert workdirs.did_you_mean(str(runs)) == (
      f' Did you mean {runs}/ablation/clan/seed0 or {runs}/demo?')


def test_require_workdir_names_the_problem_and_the_run_meant(runs):
  assert workdirs.require_workdir('runs/demo') == str(runs / 'demo')
  with pytest.raises(UserError, match=r'^--workdir=runs is not a training workdir: it lacks '
                     r'config.json and classes.json, which training writes first. Did you '
                     r'mean runs/ablation/clan/seed0 or runs/demo\?$'):
    workdirs.require_workdir('runs')
  with pytest.raises(UserError, match=r'Did you mean runs/demo\?$'):
    workdirs.require_workdir('runs/demo/checkpoints')
  with pytest.raises(UserError, match=r'not a training workdir.*Give the --workdir of a '
                     r'training run \(python main.py'):
    workdirs.require_workdir('runs/empty')
  with pytest.raises(UserError, match=r'^--workdir=runs/demo/nope: no such directory. Did you '
                     r'mean runs/demo\?$'):
    workdirs.require_workdir('runs/demo/nope')


def test_a_workdir_under_home_written_with_a_tilde(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  make_workdir(tmp_path / 'run', {'model': {'depth': 18}})
  assert workdirs.read_run_config('~/run').model.depth == 18


def test_read_run_config_reads_the_runs_config_or_says_why_not(runs):
  (runs / 'demo' / 'config.json').write_text('{"model": {"depth": 18}, "seed": 3}')
  config = workdirs.read_run_config('runs/demo')
  assert config.model.depth == 18 and config.seed == 3
  with pytest.raises(UserError, match='Did you mean runs/demo'):
    workdirs.read_run_config('runs/demo/checkpoints')
  (runs / 'demo' / 'config.json').write_text('{"model": ')
  with pytest.raises(UserError, match='config.json cannot be read'):
    workdirs.read_run_config('runs/demo')


def test_training_refuses_a_folder_that_holds_runs_and_takes_any_other(runs):
  with pytest.raises(UserError, match=r'^--workdir=runs holds training workdirs, so it is not '
                     r'one itself. Did you mean .*runs/demo\? To resume a run, give its '
                     r'folder; for a new run, a folder of its own \(--workdir=runs/NAME\).$'):
    workdirs.check_training_workdir('runs')
  for fine in ('runs/demo', 'runs/empty', 'runs/new', 'runs/demo/finetune'):
    workdirs.check_training_workdir(fine)
