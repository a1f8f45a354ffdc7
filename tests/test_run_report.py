"""clan_jax.train.run_report: the end of a training run (outputs, next commands) and a
finished run started again (reported from its files, nothing trained or changed)."""

import json
import os
import shutil

import pytest

from clan_jax.train import run_report
from helpers.configs import load_config_file
from helpers.trained_model import TRAINED_SYNTHETIC_STEPS

# With the other users of the shared trained workdir on one pytest-xdist worker (make test).
pytestmark = pytest.mark.xdist_group('trained_synthetic')


@pytest.fixture
def config():
  from configs import default

  return default.get_config()


def test_the_next_commands_are_those_of_this_workdir(config, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  lines = run_report.next_commands(config, str(tmp_path / 'runs' / 'demo'))
  commands = [line.split('#')[0].strip() for line in lines]
  assert commands == [
      'python -m clan_jax.predict --workdir=runs/demo IMAGE',
      'python main.py --workdir=runs/demo --mode=visualize --checkpoint=best',
      'tensorboard --logdir=runs/demo',
      'python main.py --workdir=runs/demo --mode=eval --checkpoint=best']
  assert '# top-5 classes of an image file' in lines[0]
  assert len({line.index('#') for line in lines}) == 1  # One column of comments.


def test_a_model_without_attention_maps_gets_no_figures_command(config, tmp_path):
  config.model.name = 'resnet'
  lines = run_report.next_commands(config, str(tmp_path))
  assert len(lines) == 3 and not any('visualize' in line for line in lines)


def test_a_folder_dataset_names_one_of_its_eval_images(config, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for name in ('test/cardinal/002.jpg', 'test/cardinal/001.jpg', 'train/wren/003.jpg'):
    (tmp_path / 'birds' / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / 'birds' / name).write_bytes(b'')
  (tmp_path / 'birds' / 'test' / 'cardinal' / '.DS_Store').write_bytes(b'')
  config.dataset.update(name='folder', root='birds', eval_split='test[:50%]')
  assert run_report.example_image(config) == 'birds/test/cardinal/001.jpg'
  first = run_report.next_commands(config, 'runs/birds')[0]
  assert first.startswith('  python -m clan_jax.predict --workdir=runs/birds '
                          'birds/test/cardinal/001.jpg  # top-5 classes of this image')
  config.dataset.root = 'moved'
  assert run_report.example_image(config) is None


def test_the_outputs_line_names_what_the_workdir_holds(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'run' / 'checkpoints').mkdir(parents=True)
  for name in ('config.json', 'eval_results.json', 'events.out.tfevents.1.host'):
    (tmp_path / 'run' / name).write_text('{}')
  assert run_report.outputs_line(str(tmp_path / 'run')) == (
      'outputs in run: eval_results.json, config.json, checkpoints/, TensorBoard events')


@pytest.fixture
def finished_copy(trained_synthetic_workdir, tmp_path, monkeypatch):
  """A copy of the session's trained workdir (trained to its end and evaluated), its config,
  and the current folder above it."""
  workdir = tmp_path / 'runs' / 'tiny'
  shutil.copytree(trained_synthetic_workdir, workdir)
  monkeypatch.chdir(tmp_path)
  return workdir, load_config_file(workdir / 'tiny_config.py')


def snapshot(folder):
  return {path: os.stat(os.path.join(path)).st_mtime_ns
          for path in (os.path.join(d, f) for d, _, files in os.walk(folder) for f in files)}


def test_a_finished_run_is_reported_from_its_files_and_left_as_it_is(finished_copy, capsys):
  workdir, config = finished_copy
  before = snapshot(workdir)
  stored = json.loads((workdir / 'eval_results.json').read_text())
  assert run_report.report_if_finished(config, str(workdir)) == stored
  assert snapshot(workdir) == before
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == (f'runs/tiny is a finished run (trained to step {TRAINED_SYNTHETIC_STEPS} '
                      f'of {TRAINED_SYNTHETIC_STEPS}, evaluated): nothing to train, nothing '
                      'changed.')
  assert lines[1].startswith(f'test top-1 (fused: sum): {stored["fused"]["top1"]:.4f} (chance '
                             '0.2500: 4 classes)')
  assert lines[2].startswith('outputs in runs/tiny: eval_results.json, config.json')
  assert lines[3] == ('to train again, run the same command with another --workdir, e.g. '
                      '--workdir=runs/tiny_seed1 --config.seed=1 (another seed)')
  assert lines[4] == 'next:' and 'python -m clan_jax.predict --workdir=runs/tiny' in lines[5]


def test_a_run_with_more_steps_to_go_or_without_results_is_not_finished(finished_copy):
  workdir, config = finished_copy
  config.num_train_steps = TRAINED_SYNTHETIC_STEPS + 10  # Continues the run.
  assert run_report.report_if_finished(config, str(workdir)) is None
  config.num_train_steps = TRAINED_SYNTHETIC_STEPS
  (workdir / 'eval_results.json').unlink()  # Killed before its final evaluation was written.
  assert run_report.report_if_finished(config, str(workdir)) is None
