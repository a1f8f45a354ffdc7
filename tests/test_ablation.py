"""clan_jax.ablation: the plan, the overrides, skipping and resuming, with a fake launcher
(nothing trains here; main.py's own training and resumption are tested in test_train.py)."""

import json
import os

import pytest

from clan_jax.base.cli import EXIT_RESUMABLE
from clan_jax.base.errors import UserError
from clan_jax.experiments import ablation_runs
from helpers.commands import run_cli


def _plan(tmp_path, variants=ablation_runs.DEFAULT_VARIANTS, seeds=(0, 1, 2)):
  return ablation_runs.plan_runs('configs/demo.py', str(tmp_path), ['--config.num_train_steps=4'],
                            variants, seeds)


class FakeLauncher:
  """Writes an eval_results.json as main.py would (top-1 from the command), or fails."""

  def __init__(self, returncode=0, signal_name=None, finish=None):
    self.commands, self.returncode, self.signal_name = [], returncode, signal_name
    self.finish = (returncode == 0 and not signal_name) if finish is None else finish

  def __call__(self, command, log_path):
    self.commands.append(command)
    with open(log_path, 'a') as f:
      f.write('a line of the log\n')
    if self.finish:
      workdir = next(a.split('=', 1)[1] for a in command if a.startswith('--workdir='))
      seed = int(next(a.split('=')[1] for a in command if a.startswith('--config.seed=')))
      _write_results(workdir, top1=0.5 + 0.1 * seed)
    return self.returncode, self.signal_name


def _write_results(workdir, top1, steps=4):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'eval_results.json'), 'w') as f:
    json.dump({'fused': {'top1': top1}, 'heads': {'top': {'top1': top1 - 0.1}},
               'protocol': {'step': steps}}, f)


def test_each_run_sets_its_variant_and_both_seed_fields_but_not_the_dataset(tmp_path):
  runs = _plan(tmp_path)
  assert len(runs) == 12
  assert [(r.variant, r.seed) for r in runs[:5]] == [
      ('clan', 0), ('no_clca', 0), ('no_clsa', 0), ('resnet', 0), ('clan', 1)]
  no_clca_seed2 = next(r for r in runs if (r.variant, r.seed) == ('no_clca', 2))
  assert no_clca_seed2.overrides == (
      '--config.num_train_steps=4', '--config.model.name=clan', '--config.model.use_clca=False',
      '--config.model.use_clsa=True', '--config.seed=2', '--config.dataset.shuffle_seed=2')
  assert no_clca_seed2.workdir == os.path.join(str(tmp_path), 'no_clca', 'seed2')
  assert no_clca_seed2.shown_command.startswith(
      f'python main.py --config=configs/demo.py --workdir={no_clca_seed2.workdir} ')
  resnet = next(r for r in runs if r.variant == 'resnet')
  assert '--config.model.name=resnet' in resnet.overrides
  assert not any('synthetic' in flag for run in runs for flag in run.overrides)


def test_user_overrides_are_kept_as_given_and_controlled_fields_refused():
  argv = ['--config=configs/demo.py', '--config.num_train_steps=400', '--seeds=0,1',
          '--config.dataset.synthetic.seed', '3', '--noconfig.dataset.cache']
  assert ablation_runs.user_overrides(argv) == [
      '--config.num_train_steps=400', '--config.dataset.synthetic.seed=3',
      '--noconfig.dataset.cache']
  for flag in ('--config.seed=1', '--config.dataset.shuffle_seed=1',
               '--config.model.use_clca=False', '--config.model.name=resnet'):
    with pytest.raises(UserError, match='set by the ablation itself'):
      ablation_runs.user_overrides([flag])
  # A negative value in the space-separated form is the value, not the next flag.
  assert ablation_runs.user_overrides(['--config.eval_every_steps', '-1', '--seeds=0']) == [
      '--config.eval_every_steps=-1']
  with pytest.raises(UserError, match='--flagfile is not passed on to the runs'):
    ablation_runs.user_overrides(['--flagfile=overrides.txt'])


def test_seeds_and_variants_are_checked():
  assert ablation_runs.parse_seeds(['0', '1', '2']) == [0, 1, 2]
  for bad in (['a'], ['-1'], ['1', '1'], []):
    with pytest.raises(UserError, match='--seeds'):
      ablation_runs.parse_seeds(bad)
  with pytest.raises(UserError, match='among clan, no_clca'):
    ablation_runs.parse_variants(['clan', 'no_attention'])


def test_finished_runs_are_skipped_and_the_rest_run(tmp_path):
  runs = _plan(tmp_path, seeds=(0, 1))
  launcher = FakeLauncher()
  assert ablation_runs.execute(runs[:3], launcher) is None  # A first, interrupted, session.
  launcher = FakeLauncher()
  tables = []
  assert ablation_runs.execute(runs, launcher, on_result=lambda: tables.append(1)) is None
  assert len(launcher.commands) == 5 and len(tables) == 5
  assert launcher.commands[0] == runs[3].command
  record = json.loads((tmp_path / 'resnet' / 'seed0' / 'ablation_run.json').read_text())
  assert record['wall_s'] >= 0 and record['resumed'] is False
  assert record['overrides'] == list(runs[3].overrides)
  assert ablation_runs.execute(runs, FakeLauncher()) is None  # All done: nothing runs.
  rows = ablation_runs.table_rows(runs, ablation_runs.DEFAULT_VARIANTS)
  assert [row['top1_mean'] for row in rows] == pytest.approx([0.55] * 4)
  assert rows[0]['top_head_top1_mean'] == pytest.approx(0.45)


def test_a_workdir_with_other_overrides_is_refused_before_anything_runs(tmp_path):
  runs = _plan(tmp_path, seeds=(0,))
  ablation_runs.execute(runs[:1], FakeLauncher())
  other = ablation_runs.plan_runs('configs/demo.py', str(tmp_path), ['--config.num_train_steps=8'],
                             ['no_clca', 'clan'], [0])
  launcher = FakeLauncher()
  with pytest.raises(UserError, match='other overrides'):
    ablation_runs.execute(other, launcher)
  assert launcher.commands == []
  _write_results(str(tmp_path / 'foreign' / 'clan' / 'seed0'), 0.9)
  with pytest.raises(UserError, match='did not start'):
    ablation_runs.execute(_plan(tmp_path / 'foreign', seeds=(0,)), FakeLauncher())


def test_a_stopped_run_ends_the_session_and_resumes_next_time(tmp_path):
  runs = _plan(tmp_path, variants=['clan'], seeds=(0,))
  (tmp_path / 'clan' / 'seed0' / 'checkpoints').mkdir(parents=True)
  ablation_runs._start_record(runs[0])  # As a killed session leaves it: a record, a checkpoint.
  stopped = ablation_runs.execute(runs, FakeLauncher(EXIT_RESUMABLE, signal_name='SIGTERM'))
  assert 'stopped by SIGTERM' in stopped and 'run the same command' in stopped
  launcher = FakeLauncher()
  assert ablation_runs.execute(runs, launcher) is None and len(launcher.commands) == 1
  record = json.loads((tmp_path / 'clan' / 'seed0' / 'ablation_run.json').read_text())
  assert record['resumed'] is True


def test_a_run_stopped_by_its_own_signal_is_resumable_and_exit_0_without_results_fails(
    tmp_path):
  runs = _plan(tmp_path, variants=['clan'], seeds=(0,))
  # The signal went to the run alone (not through the driver): main.py's status tells.
  stopped = ablation_runs.execute(runs, FakeLauncher(EXIT_RESUMABLE))
  assert stopped == '1/1 clan seed 0 stopped before its end; its checkpoint is kept: run the ' \
                    'same command to resume.'
  with pytest.raises(ablation_runs.RunFailed, match='exit status 0'):
    ablation_runs.execute(runs, FakeLauncher(0, finish=False))


def test_a_signal_as_a_run_ends_keeps_the_run_and_stops(tmp_path):
  runs = _plan(tmp_path, variants=['clan', 'resnet'], seeds=(0,))
  launcher = FakeLauncher(signal_name='SIGINT', finish=True)
  stopped = ablation_runs.execute(runs, launcher)
  assert stopped.startswith('stopped by SIGINT after 1/2 clan seed 0')
  assert len(launcher.commands) == 1 and ablation_runs.finished_result(runs[0])['wall_s'] >= 0


def test_a_failed_run_raises_with_its_log(tmp_path):
  runs = _plan(tmp_path, variants=['resnet'], seeds=(0,))
  with pytest.raises(ablation_runs.RunFailed, match='exit status 2') as error:
    ablation_runs.execute(runs, FakeLauncher(returncode=2))
  assert 'a line of the log' in str(error.value) and error.value.returncode == 2


def test_write_table_writes_markdown_and_json(tmp_path):
  runs = _plan(tmp_path, variants=['clan', 'resnet'], seeds=(0, 1))
  ablation_runs.execute(runs[:3], FakeLauncher())
  meta = {'command': 'python -m clan_jax.ablation ...', 'config': 'configs/demo.py',
          'overrides': [], 'seeds': [0, 1], 'seed_fields': ['config.seed'],
          'dataset': 'synthetic, dataset.synthetic.seed=0'}
  markdown = ablation_runs.write_table(str(tmp_path), runs, ['clan', 'resnet'], meta)
  assert (tmp_path / 'ablation.md').read_text() == markdown
  assert 'Finished runs: 3 of 4' in markdown
  saved = json.loads((tmp_path / 'ablation.json').read_text())
  assert [len(v['runs']) for v in saved['variants']] == [2, 1]


def test_dry_run_prints_the_twelve_commands(tmp_path):
  result = run_cli('-m', 'clan_jax.ablation', '--config=configs/demo.py',
                   f'--workdir={tmp_path}', '--config.num_train_steps=2', '--dry_run')
  lines = result.stdout.splitlines()
  assert len(lines) == 12 and all(line.startswith('python main.py') for line in lines)
  assert all('--config.num_train_steps=2' in line for line in lines)
  assert not os.listdir(tmp_path)


def test_command_line_errors_are_messages(tmp_path):
  result = run_cli('-m', 'clan_jax.ablation', '--config=configs/demo.py',
                   f'--workdir={tmp_path}', '--config.seed=3', check_returncode=2)
  assert 'set by the ablation itself' in result.stderr and 'Traceback' not in result.stderr
  result = run_cli('-m', 'clan_jax.ablation', '--config=configs/demo.py', '--seeds=0,x',
                   f'--workdir={tmp_path}', check_returncode=2)
  assert '--seeds=0,x is invalid' in result.stderr and 'Traceback' not in result.stderr
