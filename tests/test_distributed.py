"""clan_jax/train/distributed.py: main.py's multi-process flags, checked before JAX starts.

Starting the runtime itself takes several processes: tests/test_train_multihost.py.
"""

import os
import subprocess
import sys

import pytest

from clan_jax.train import distributed
from clan_jax.train.distributed import Launch
from clan_jax.base.errors import UserError
from helpers.commands import REPO_ROOT, run_cli


def test_no_flag_is_one_process():
  assert distributed.launch_from_flags(False) is None
  assert distributed.launch_from_flags(False, '', None, None) is None


def test_explicit_flags_detect_nothing():
  assert distributed.launch_from_flags(False, '10.0.0.1:1234', 4, 3) == Launch(
      detect=False, coordinator_address='10.0.0.1:1234', num_processes=4, process_id=3)
  assert distributed.launch_from_flags(False, '[::1]:80', 1, 0).num_processes == 1


def test_distributed_detects_what_is_not_given():
  assert distributed.launch_from_flags(True) == Launch(detect=True)
  assert distributed.launch_from_flags(True, 'head:1234') == Launch(
      detect=True, coordinator_address='head:1234')
  # --distributed with every value given has nothing left to detect.
  assert not distributed.launch_from_flags(True, 'head:1234', 2, 1).detect


@pytest.mark.parametrize('flags, message', [
    (('', None, 1), '--process_id given without --coordinator_address and --num_processes'),
    (('', 2, None), '--num_processes given without --coordinator_address and --process_id'),
    (('h:1', 2, None), '--coordinator_address and --num_processes given without --process_id'),
    (('h:1', None, None), 'or add --distributed'),
    (('h:1', 2, 2), '--process_id=2 is invalid; allowed: 0 to 1'),
    (('h:1', 2, -1), '--process_id=-1 is invalid'),
    (('h:1', 0, 0), '--num_processes=0 is invalid'),
    (('10.0.0.1', 2, 0), "--coordinator_address='10.0.0.1' is not HOST:PORT"),
    (('h:port', 2, 0), 'is not HOST:PORT'),
    (('h:70000', 2, 0), 'is not HOST:PORT'),
])
def test_inconsistent_flags_are_clear_errors(flags, message):
  with pytest.raises(UserError, match=message.replace('(', r'\(')):
    distributed.launch_from_flags(False, *flags)


def test_main_reports_inconsistent_flags_before_loading_the_config():
  result = run_cli('main.py', '--config=configs/absent.py', '--workdir=/tmp/unused',
                   '--process_id=1', check_returncode=2)
  assert 'error: --process_id given without' in result.stderr
  assert 'Traceback' not in result.stderr and 'absent.py' not in result.stderr


def test_distributed_outside_a_cluster_is_a_clear_error(tmp_path):
  # Nothing of SLURM, Open MPI, Kubernetes or JAX's own variables: nothing to detect.
  markers = ('SLURM_', 'OMPI_', 'PMI_', 'KUBERNETES_', 'TPU_', 'JAX_COORDINATOR',
             'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')
  env = {k: v for k, v in os.environ.items() if not k.startswith(markers)}
  env.update(JAX_PLATFORMS='cpu', TPU_SKIP_MDS_QUERY='1')
  result = subprocess.run([sys.executable, 'main.py', '--config=configs/demo.py',
                           f'--workdir={tmp_path}', '--distributed'], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'error: --distributed found no job to join' in result.stderr
  assert 'Open MPI' in result.stderr and 'Traceback' not in result.stderr
  assert not list(tmp_path.iterdir())
