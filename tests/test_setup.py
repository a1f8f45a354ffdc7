"""clan_jax/train/setup.py: the files a run writes into its workdir (run_info.json here;
config.json and classes.json, and setup_run's checks, are exercised by tests/test_train.py)."""

import json
import shutil
import subprocess
import sys
import types

import jax
import pytest

from clan_jax.base.errors import ConfigError
from clan_jax.train import setup
from configs import default


def _run(workdir, train=True):
  """What write_run_files reads of a Run: a training run has train_data."""
  return types.SimpleNamespace(is_main_process=True, workdir=str(workdir),
                               config=default.get_config(), class_names=['a', 'b'],
                               train_data=object() if train else None)


def _starts(workdir):
  return json.loads((workdir / 'run_info.json').read_text())['starts']


def _git(*args):
  return subprocess.run(['git', '-C', setup.CODE_ROOT, *args], capture_output=True, text=True,
                        check=True).stdout.strip()


def test_each_training_start_is_recorded_and_kept(tmp_path, monkeypatch):
  command = ['main.py', '--config=configs/cub.py', f'--workdir={tmp_path}']
  monkeypatch.setattr(sys, 'argv', command)
  setup.write_run_files(_run(tmp_path))
  first = _starts(tmp_path)
  monkeypatch.setattr(sys, 'argv', ['main.py', '--config.num_epochs=2'])
  setup.write_run_files(_run(tmp_path))  # A resumed run.
  starts = _starts(tmp_path)
  assert len(starts) == 2 and starts[0] == first[0]
  assert starts[0]['command'] == command
  assert starts[1]['command'] == ['main.py', '--config.num_epochs=2']
  start = starts[1]
  assert start['date'].endswith('+00:00')
  versions = start['versions']
  assert versions['jax'] == jax.__version__ and versions['python'] == sys.version.split()[0]
  assert {'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-datasets', 'clu',
          'numpy'} <= set(versions)
  assert 'tensorflow' in versions or 'tensorflow-cpu' in versions
  device = jax.devices()[0]
  assert start['devices'] == {'platform': device.platform, 'kind': device.device_kind,
                              'count': jax.device_count(), 'local_count': jax.local_device_count()}
  assert start['processes'] == {'count': jax.process_count(), 'index': jax.process_index()}


def test_evaluation_writes_no_run_info(tmp_path):
  setup.write_run_files(_run(tmp_path, train=False))
  assert (tmp_path / 'classes.json').exists() and not (tmp_path / 'run_info.json').exists()


def test_evaluation_keeps_the_trainings_config_and_classes(tmp_path):
  (tmp_path / 'config.json').write_text('{"batch_size": 3}')  # Unlike the evaluation's.
  (tmp_path / 'classes.json').write_text('{"classes": ["x", "y"]}')
  setup.write_run_files(_run(tmp_path, train=False))
  assert (tmp_path / 'config.json').read_text() == '{"batch_size": 3}'
  assert (tmp_path / 'classes.json').read_text() == '{"classes": ["x", "y"]}'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['classes.json', 'config.json']


@pytest.mark.skipif(shutil.which('git') is None, reason='git is not installed')
def test_the_code_is_the_checkouts_commit_and_none_elsewhere(tmp_path, monkeypatch):
  try:
    commit = _git('rev-parse', 'HEAD')
  except subprocess.CalledProcessError:
    pytest.skip('the code is not a git checkout (e.g. an sdist)')
  dirty = bool(_git('status', '--porcelain', '--untracked-files=no'))
  setup.write_run_files(_run(tmp_path / 'checkout'))
  assert _starts(tmp_path / 'checkout')[0]['code'] == {'commit': commit, 'dirty': dirty}
  monkeypatch.setattr(setup, 'CODE_ROOT', str(tmp_path))  # Not the top of a repository.
  setup.write_run_files(_run(tmp_path / 'installed'))
  assert _starts(tmp_path / 'installed')[0]['code'] is None
  monkeypatch.setenv('PATH', '')  # No git at all: still no error.
  setup.write_run_files(_run(tmp_path / 'installed'))
  assert _starts(tmp_path / 'installed')[1]['code'] is None


def test_torch_is_recorded_only_when_already_imported(tmp_path, monkeypatch):
  monkeypatch.delitem(sys.modules, 'torch', raising=False)
  setup.write_run_files(_run(tmp_path))
  assert 'torch' not in _starts(tmp_path)[0]['versions'] and 'torch' not in sys.modules
  monkeypatch.setitem(sys.modules, 'torch', types.SimpleNamespace(__version__='9.9.9'))
  setup.write_run_files(_run(tmp_path))
  assert _starts(tmp_path)[1]['versions']['torch'] == '9.9.9'


def test_an_unreadable_run_info_is_set_aside(tmp_path):
  (tmp_path / 'run_info.json').write_text('{"starts": [')  # Cut short by hand.
  setup.write_run_files(_run(tmp_path))
  assert len(_starts(tmp_path)) == 1
  [kept] = tmp_path.glob('run_info.json.*.unreadable')
  assert kept.read_text() == '{"starts": ['


def test_setup_run_refuses_to_train_a_real_dataset_without_weights(tmp_path):
  config = default.get_config()  # CUB, no init weights; its data is absent, never read.
  with pytest.raises(ConfigError, match='trains from ImageNet weights'):
    setup.setup_run(config, str(tmp_path / 'run'), train=True)
  assert not (tmp_path / 'run').exists()
