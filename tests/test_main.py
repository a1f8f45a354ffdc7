"""main.py: flag parsing and config validation with clear messages, no tracebacks."""

from helpers.commands import run_cli


def test_missing_workdir_is_a_message():
  result = run_cli('main.py', '--config=configs/demo.py', check_returncode=2)
  assert '--workdir is required' in result.stderr and 'Traceback' not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1  # Before TensorFlow's start-up logs.


def test_misspelled_key_is_a_message_with_a_suggestion():
  result = run_cli('main.py', '--config=configs/default.py', '--config.model.dept=18',
                   check_returncode=2)
  assert 'did you mean model.depth' in result.stderr and 'Traceback' not in result.stderr


def test_invalid_value_names_the_field_and_allowed_values():
  result = run_cli('main.py', '--config=configs/default.py', '--config.model.depth=77',
                   check_returncode=2)
  assert 'model.depth=77 is invalid; allowed values: 18, 34, 50, 101, 152' in result.stderr
  assert 'Traceback' not in result.stderr


def test_missing_config_file_is_a_message():
  result = run_cli('main.py', '--config=configs/absent.py', check_returncode=2)
  assert 'configs/absent.py' in result.stderr and 'Traceback' not in result.stderr


def test_checkpoint_with_training_is_a_message(tmp_path):
  result = run_cli('main.py', '--config=configs/demo.py', f'--workdir={tmp_path}',
                   '--checkpoint=best', check_returncode=2)
  assert '--checkpoint chooses what --mode=eval' in result.stderr
  assert 'Traceback' not in result.stderr and not any(tmp_path.iterdir())


def test_a_workdir_that_is_a_file_is_a_message(tmp_path):
  a_file = tmp_path / 'notes.txt'
  a_file.write_text('keep me')
  result = run_cli('main.py', '--config=configs/demo.py', f'--workdir={a_file}',
                   check_returncode=2)
  assert 'error: --workdir' in result.stderr and 'is a file, not a folder' in result.stderr
  assert 'Traceback' not in result.stderr and a_file.read_text() == 'keep me'


def test_training_a_real_dataset_without_imagenet_weights_is_refused(tmp_path):
  result = run_cli('main.py', '--config=configs/cub.py', f'--workdir={tmp_path}',
                   check_returncode=2)
  assert result.stderr.startswith("error: dataset.name='cub' trains from ImageNet weights")
  assert len(result.stderr.strip().splitlines()) == 1  # Before TensorFlow's start-up logs.
  for expected in ('https://download.pytorch.org/models/resnet50-0676ba61.pth',
                   '--config.init.torch_checkpoint=PATH/resnet50-0676ba61.pth',
                   '--config.init.from_scratch=True'):
    assert expected in result.stderr
  assert not any(tmp_path.iterdir())


def test_evaluation_is_not_concerned_by_the_weights_rule():
  # The rule comes before the --workdir check: its absence shows eval passed it.
  for mode in ('eval', 'visualize'):
    result = run_cli('main.py', '--config=configs/cub.py', f'--mode={mode}', check_returncode=2)
    assert result.stderr.startswith('error: --workdir is required'), result.stderr


def fake_runs(base):
  """base/runs/demo: the files a training run writes first (its config: configs/demo.py)."""
  from configs import demo

  workdir = base / 'runs' / 'demo'
  (workdir / 'checkpoints').mkdir(parents=True)
  (workdir / 'config.json').write_text(demo.get_config().to_json_best_effort())
  (workdir / 'classes.json').write_text('{"classes": ["a", "b"]}')
  return workdir


def test_eval_and_visualize_without_config_read_the_runs_and_name_the_run_meant(tmp_path):
  workdir = fake_runs(tmp_path)
  for mode, folder in (('eval', workdir.parent), ('visualize', workdir / 'checkpoints')):
    result = run_cli('main.py', f'--workdir={folder}', f'--mode={mode}', check_returncode=2)
    assert result.stderr == (f'error: --workdir={folder} is not a training workdir: it lacks '
                             'config.json and classes.json, which training writes first. Did '
                             f'you mean {workdir}?\n')  # One line, before TensorFlow's logs.
  # A config.json that fails validation is named like --config's would be.
  (workdir / 'config.json').write_text(
      (workdir / 'config.json').read_text().replace('"depth": 18', '"depth": 77'))
  result = run_cli('main.py', f'--workdir={workdir}', '--mode=eval', check_returncode=2)
  assert 'model.depth=77 is invalid' in result.stderr and 'Traceback' not in result.stderr


def test_an_override_without_config_is_a_message(tmp_path):
  workdir = fake_runs(tmp_path)
  result = run_cli('main.py', f'--workdir={workdir}', '--mode=eval', '--config.eval.flip=True',
                   check_returncode=2)
  assert result.stderr == ('error: --config.eval.flip=True changes a key of --config, which is '
                           'not given: add --config=FILE (the configs/*.py file the run was '
                           'trained with, for --mode=eval or visualize).\n')


def test_training_in_a_folder_that_holds_a_run_is_refused(tmp_path):
  workdir = fake_runs(tmp_path)
  before = sorted(tmp_path.rglob('*'))
  result = run_cli('main.py', '--config=configs/demo.py', f'--workdir={workdir.parent}',
                   check_returncode=2)
  assert result.stderr.startswith(f'error: --workdir={workdir.parent} holds training '
                                  f'workdirs, so it is not one itself. Did you mean {workdir}?')
  assert sorted(tmp_path.rglob('*')) == before
