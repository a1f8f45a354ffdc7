"""clan_jax/train/workdir_lock.py: one training per workdir; a killed run's lock is stale;
evaluation beside a running training leaves its files alone."""

import contextlib
import datetime
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

import pytest

from clan_jax.train import workdir_lock
from clan_jax.train.workdir_lock import LOCK_FILE, WorkdirInUseError
from helpers.commands import REPO_ROOT, run_cli
from helpers.configs import dataset_config
from helpers.trained_model import TRAINED_SYNTHETIC_STEPS

# Another process that takes the lock, says so and runs on: a training, as far as the lock
# can tell.
HOLDER = '''
import sys, time
from clan_jax.train import workdir_lock
workdir_lock.acquire(sys.argv[1])
print('held', flush=True)
time.sleep(600)
'''


@contextlib.contextmanager
def held_by_another_process(workdir):
  """A live process holding workdir's lock; yields its Popen (killed at the end)."""
  process = subprocess.Popen([sys.executable, '-c', HOLDER, str(workdir)], cwd=REPO_ROOT,
                             env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)},
                             stdout=subprocess.PIPE, text=True)
  try:
    assert process.stdout.readline().strip() == 'held'
    yield process
  finally:
    process.kill()
    process.wait()


def read_record(workdir):
  return json.loads((workdir / LOCK_FILE).read_text())


def test_the_lock_names_its_training_until_released(tmp_path):
  lock = workdir_lock.acquire(str(tmp_path))
  record = read_record(tmp_path)
  assert record['host'] == socket.gethostname() and record['pid'] == os.getpid()
  assert record['heartbeat'] == record['started'] and record['command'] == shlex.join(sys.argv)
  assert datetime.datetime.fromisoformat(record['started']).tzinfo is not None
  assert workdir_lock.live_training(str(tmp_path)) == record
  lock.release()
  assert not (tmp_path / LOCK_FILE).exists()
  assert workdir_lock.live_training(str(tmp_path)) is None


def test_a_second_training_is_refused_with_who_holds_it_and_since_when(tmp_path):
  with workdir_lock.hold(str(tmp_path)) as lock:
    with pytest.raises(WorkdirInUseError) as raised:
      workdir_lock.acquire(str(tmp_path))
    assert read_record(tmp_path) == lock.record  # Untouched.
  message = str(raised.value)
  assert message.startswith(f'--workdir {tmp_path} is in use by a training: pid {os.getpid()} '
                            f'on host {socket.gethostname()} since {lock.record["started"]} '
                            "(heartbeat ")
  assert message.endswith('Wait for it, stop it, or use another --workdir; if that process is '
                          f'gone, delete {tmp_path / LOCK_FILE}.')


def test_the_lock_of_a_sigkilled_training_never_blocks_its_restart(tmp_path, caplog):
  with held_by_another_process(tmp_path) as holder:
    with pytest.raises(WorkdirInUseError, match=f'pid {holder.pid} on host'):
      workdir_lock.acquire(str(tmp_path))
    assert workdir_lock.live_training(str(tmp_path))['pid'] == holder.pid
    holder.kill()  # SIGKILL: no clean-up; the file stays.
    holder.wait()
    assert read_record(tmp_path)['pid'] == holder.pid
    assert workdir_lock.live_training(str(tmp_path)) is None
    with caplog.at_level(logging.WARNING), workdir_lock.hold(str(tmp_path)):
      assert read_record(tmp_path)['pid'] == os.getpid()
  assert f'replacing the stale lock {tmp_path / LOCK_FILE}' in caplog.text
  assert f'pid {holder.pid} on host' in caplog.text and 'ended' in caplog.text
  assert not any(tmp_path.iterdir())


def _write_foreign_lock(workdir, heartbeat_age_s):
  beat = datetime.datetime.now().astimezone() - datetime.timedelta(seconds=heartbeat_age_s)
  record = {'host': 'another-host', 'pid': 1, 'started': '2026-12-01T08:00:00+00:00',
            'heartbeat': beat.isoformat(timespec='seconds'), 'command': 'main.py'}
  (workdir / LOCK_FILE).write_text(json.dumps(record))


def test_a_lock_of_another_host_is_stale_once_its_heartbeat_is_old(tmp_path, caplog):
  # Its pid and flock tell nothing here (NFS, gcsfuse, Drive): only the heartbeat does.
  _write_foreign_lock(tmp_path, heartbeat_age_s=20)
  with pytest.raises(WorkdirInUseError, match='pid 1 on host another-host since 2026-12-01T08'
                     r':00:00\+00:00 \(heartbeat 2\d s ago: main.py\)'):
    workdir_lock.acquire(str(tmp_path))
  _write_foreign_lock(tmp_path, heartbeat_age_s=workdir_lock.STALE_AFTER_SECONDS + 5)
  with caplog.at_level(logging.WARNING), workdir_lock.hold(str(tmp_path)):
    assert read_record(tmp_path)['host'] == socket.gethostname()
  age = re.search(r'its heartbeat is (\d+) s old', caplog.text)
  assert 'host another-host' in caplog.text and int(age[1]) > workdir_lock.STALE_AFTER_SECONDS


def test_the_heartbeat_is_refreshed_while_the_lock_is_held(tmp_path, monkeypatch):
  later = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
  with workdir_lock.hold(str(tmp_path), heartbeat_seconds=0.05):
    started = read_record(tmp_path)['started']
    monkeypatch.setattr(workdir_lock, '_now', lambda: later)
    deadline = time.time() + 5
    while read_record(tmp_path)['heartbeat'] != later.isoformat() and time.time() < deadline:
      time.sleep(0.05)
    record = read_record(tmp_path)
  assert record['heartbeat'] == '2030-01-01T00:00:00+00:00' and record['started'] == started


def test_the_lock_is_released_when_the_training_fails(tmp_path):
  with pytest.raises(RuntimeError), workdir_lock.claims() as claim:
    claim(str(tmp_path))
    assert (tmp_path / LOCK_FILE).exists()
    raise RuntimeError('a failure before the first step')
  assert not (tmp_path / LOCK_FILE).exists()


def test_training_takes_the_lock_before_the_data_and_a_failure_leaves_none(tmp_path):
  from clan_jax.base.errors import UserError
  from clan_jax.train.loop import train_and_evaluate
  from configs import default

  config = default.get_config()  # The data are missing: the run fails before its first step.
  config.dataset = dataset_config(name='cub', manual_dir=str(tmp_path / 'absent'),
                                  data_dir=str(tmp_path / 'data'))
  config.init.from_scratch = True
  workdir = tmp_path / 'run'
  workdir.mkdir()
  with held_by_another_process(workdir) as holder:
    with pytest.raises(WorkdirInUseError, match=f'pid {holder.pid} on host'):
      train_and_evaluate(config, str(workdir))
  assert not (tmp_path / 'data').exists()  # Refused before the data load.
  os.remove(workdir / LOCK_FILE)  # Left by the SIGKILL.
  with pytest.raises(UserError, match='CUB_200_2011.tgz'):
    train_and_evaluate(config, str(workdir))
  assert not (workdir / LOCK_FILE).exists()


def test_a_second_training_on_a_busy_workdir_exits_at_once(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  with held_by_another_process(workdir) as holder:
    before = (workdir / LOCK_FILE).read_text()
    result = run_cli('main.py', '--config=configs/demo.py', f'--workdir={workdir}',
                     f'--config.dataset.data_dir={tmp_path / "data"}', check_returncode=2)
    assert (workdir / LOCK_FILE).read_text() == before
  assert result.stderr.startswith(f'error: --workdir {workdir} is in use by a training: pid '
                                  f'{holder.pid} on host {socket.gethostname()} since ')
  assert 'Traceback' not in result.stderr
  assert os.listdir(workdir) == [LOCK_FILE] and not (tmp_path / 'data').exists()  # No data.


def _tiny_config(workdir):
  import importlib.util

  spec = importlib.util.spec_from_file_location('tiny_config', workdir / 'tiny_config.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_eval_beside_a_running_training_leaves_its_files_alone(trained_synthetic_workdir,
                                                               tmp_path, capsys):
  from clan_jax.inference.run_modes import evaluate_run

  assert not (trained_synthetic_workdir / LOCK_FILE).exists()  # Released at the end.
  workdir = tmp_path / 'workdir'  # A copy: the shared workdir stays read-only.
  shutil.copytree(trained_synthetic_workdir, workdir,
                  ignore=shutil.ignore_patterns('visualizations', 'events.out.*'))
  owned = {name: (workdir / name).read_bytes() for name in ('config.json', 'classes.json',
                                                            'eval_results.json', 'metrics.jsonl')}
  config = _tiny_config(workdir)
  config.log_every_steps = 7  # A config unlike the training's: its config.json stays.
  with held_by_another_process(workdir) as holder:
    results = evaluate_run(config, str(workdir), 'latest')
  assert {name: (workdir / name).read_bytes() for name in owned} == owned
  name = f'eval_results.latest-step_{TRAINED_SYNTHETIC_STEPS}.json'
  assert json.loads((workdir / name).read_text()) == results
  assert results['protocol']['checkpoint'] == 'latest'
  assert not list(workdir.glob('config.*.json'))
  out = capsys.readouterr().out
  assert (f'a training runs in {workdir} (pid {holder.pid} on host {socket.gethostname()} since '
          in out and f'its eval_results.json is left alone; these results go to {name}' in out)
