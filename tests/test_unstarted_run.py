"""clan_jax.train.unstarted_run: a run that fails before its first step leaves its workdir as
it found it, and removes nothing else."""

import pytest

from clan_jax.train.unstarted_run import UnstartedRunCleanup


class Failed(Exception):
  pass


def write_start_files(workdir):
  """What a run writes before its first step (train/setup.py, loop.py)."""
  workdir.mkdir(parents=True, exist_ok=True)
  for name in ('config.json', 'classes.json', 'run_info.json'):
    (workdir / name).write_text('{}')
  (workdir / 'checkpoints').mkdir(exist_ok=True)
  (workdir / 'events.out.tfevents.1.host.2.0.v2').write_bytes(b'')


def fail_in(workdir, before_failing, step=False):
  with pytest.raises(Failed):
    with UnstartedRunCleanup(str(workdir)) as cleanup:
      before_failing()
      if step:
        cleanup.counting_steps(lambda *args: args)('state', 'batch')
      raise Failed()


def test_a_folder_the_run_created_is_removed_with_the_parents_it_created(tmp_path):
  workdir = tmp_path / 'runs' / 'new' / 'demo'
  fail_in(workdir, lambda: write_start_files(workdir))
  assert list(tmp_path.iterdir()) == []


def test_a_folder_that_was_there_keeps_what_it_held(tmp_path):
  workdir = tmp_path / 'demo'
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('keep me')
  (workdir / 'config.json').write_text('{"old": 1}')
  fail_in(workdir, lambda: write_start_files(workdir))
  assert sorted(p.name for p in workdir.iterdir()) == ['config.json', 'notes.txt']
  assert (workdir / 'config.json').read_text() == '{}'  # Rewritten, but it was there before.


def test_checkpoints_and_files_it_does_not_know_are_never_removed(tmp_path):
  workdir = tmp_path / 'runs' / 'demo'

  def write_more():
    write_start_files(workdir)
    (workdir / 'checkpoints' / '3').mkdir()
    (workdir / 'report.txt').write_text('written during the run')

  fail_in(workdir, write_more)
  assert sorted(p.name for p in workdir.iterdir()) == ['checkpoints', 'report.txt']
  assert (workdir / 'checkpoints' / '3').is_dir()


def test_after_the_first_step_or_without_a_failure_nothing_is_removed(tmp_path):
  started = tmp_path / 'started'
  fail_in(started, lambda: write_start_files(started), step=True)
  assert (started / 'config.json').exists()
  finished = tmp_path / 'finished'
  with UnstartedRunCleanup(str(finished)):
    write_start_files(finished)
  assert (finished / 'config.json').exists()


def test_a_workdir_that_is_a_file_is_left_alone(tmp_path):
  a_file = tmp_path / 'notes.txt'
  a_file.write_text('keep me')
  fail_in(a_file, lambda: None)
  assert a_file.read_text() == 'keep me'


def test_without_a_workdir_the_current_folder_is_left_alone(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  fail_in('', lambda: write_start_files(tmp_path))
  assert (tmp_path / 'config.json').exists()
