"""Two processes x 2 CPU devices train like one process x 4 devices, through a stop and a resume.

main.py's flags (--coordinator_address=127.0.0.1:PORT --num_processes=2 --process_id=I)
start JAX's distributed runtime; the processes share one workdir, as hosts share storage.
Launch 1 runs both processes until SIGTERM, sent to process 1 only, makes them agree on a
step (JAX's preemption service), save a checkpoint together (Orbax: every process calls
save) and both exit with the resumable status (75); launch 2 resumes both from it to the
last step. The reference is one process with 4 devices that never stops. The final
parameters' and BatchNorm statistics' updates (final minus initial) must agree to 1e-6 of
each array's largest update.

Why float64: in float32 the two topologies' all-reduces (gloo between processes, XLA's
within one) sum in different orders, and this small, randomly initialised network (batch 4,
BatchNorm over 4 images) amplifies the rounding: with this config in float32, the 2x2 run's
updates differed from the 1x4 run's by 2.1 times their size after 6 steps (measured). In
float64 they differ by 6.4e-8 (measured, deterministic), so the 1e-6 check holds with a
15x margin and would catch any real difference (a wrong data slice, a missed or repeated
step). The script below runs main.py's `main` with float64 parameters (JAX_ENABLE_X64;
float64 parameters make every layer compute in float64). Resuming changes nothing: the
resumed 2x2 run equals an uninterrupted 2x2 run bit for bit (measured once by hand).

Also checked: process 1 writes nothing in the workdir outside checkpoints/ (a Python audit
hook reports every file write; TensorBoard's C++ writer names its file after the writing
process's PID) and logs no progress. A plain ResNet-18 at 32 px: the model does not matter
here (tests/test_train_multidevice.py checks CLAN's sharded step), compile time does.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from clan_jax.base.cli import EXIT_RESUMABLE
from helpers.commands import REPO_ROOT, cli_environment

STEPS = 6
CONFIG = f'''
from configs import default


def get_config():
  config = default.get_config()
  config.model.update(name='resnet', depth=18)
  config.dataset.update(name='synthetic', data_dir={{data_dir!r}}, resize_size=40, crop_size=32,
                        cache=True)
  config.dataset.synthetic.update(num_classes=4, image_size=48, train_per_class=8,
                                  test_per_class=3)
  config.update(batch_size=4, num_train_steps={STEPS}, log_every_steps=2, eval_every_steps=0,
                checkpoint_every_steps=2, keep_checkpoints=2)
  config.optimizer.update(learning_rate=0.02, backbone_learning_rate=0.02, warmup_epochs=0.25)
  return config
'''

# main.py in float64, saving the initial variables, reporting writes into the workdir.
SCRIPT = textwrap.dedent('''
    import os, sys
    import jax, jax.numpy as jnp, numpy as np
    from clan_jax import main as entry
    from clan_jax.base import cli
    from clan_jax.train import loop as train

    def float64(dtype):
      return jnp.float64 if dtype == jnp.float32 else dtype

    # Halves the compile time of the initialisation on XLA:CPU (both topologies run this).
    jax.config.update('jax_threefry_partitionable', False)

    def initial_variables(run, original=train.initial_training_variables):
      # On the host: a cast on the device would compile one program per parameter.
      variables = jax.tree.map(lambda x: np.asarray(x, float64(x.dtype)), original(run))
      if os.environ.get('INITIAL_VARIABLES'):
        np.savez(os.environ['INITIAL_VARIABLES'], **flat(variables))
      return variables

    def abstract_train_state(run, original=train.abstract_train_state):
      return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, float64(x.dtype),
                                                         sharding=x.sharding), original(run))

    def flat(tree):
      return {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}

    def report_writes(workdir):
      workdir = os.path.abspath(workdir)
      allowed = os.path.join(workdir, 'checkpoints')

      def outside(path):
        if not isinstance(path, (str, bytes, os.PathLike)):
          return False
        path = os.path.abspath(os.fsdecode(path))
        inside = lambda root: path == root or path.startswith(root + os.sep)
        return inside(workdir) and not inside(allowed)

      def hook(event, args):
        if event == 'open':
          path, mode, flags = args
          writes = (any(c in mode for c in 'wax+') if isinstance(mode, str) else
                    bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
          paths = [path] if writes else []
        elif event in ('os.mkdir', 'os.rename', 'os.replace', 'os.remove', 'os.rmdir',
                       'os.truncate', 'os.link', 'os.symlink', 'shutil.rmtree'):
          paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        else:
          return
        for path in paths:
          if outside(path):
            print(f'WRITE {event} {os.fsdecode(path)}', file=sys.stderr, flush=True)

      sys.addaudithook(hook)

    train.initial_training_variables = initial_variables
    train.abstract_train_state = abstract_train_state
    report_writes(next(a.split('=', 1)[1] for a in sys.argv if a.startswith('--workdir=')))
    cli.run(entry.main)
''')


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Job:
  """Processes started together; any failure or timeout kills all of them, never a hang."""

  def __init__(self, commands, env, logs):
    self.logs = logs
    self.processes = []
    for i, (command, devices) in enumerate(commands):
      environment = {**env, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
      with open(f'{logs}.{i}.out', 'w') as out, open(f'{logs}.{i}.err', 'w') as err:
        self.processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=environment,
                                               stdout=out, stderr=err))

  def output(self, i):
    with open(f'{self.logs}.{i}.out') as out, open(f'{self.logs}.{i}.err') as err:
      return out.read(), err.read()

  def kill(self):
    for process in self.processes:
      if process.poll() is None:
        process.kill()
    for process in self.processes:
      process.wait()

  def wait(self, timeout: float, status: int = 0):
    """Waits for every process to exit with `status`; kills all at the first other status or
    at the timeout."""
    deadline = time.time() + timeout
    try:
      while any(p.poll() is None for p in self.processes):
        failed = [p for p in self.processes if p.poll() not in (None, status)]
        if failed or time.time() > deadline:
          break
        time.sleep(0.1)
    finally:
      self.kill()
    codes = [p.returncode for p in self.processes]
    if codes != [status] * len(codes):
      details = '\n'.join(f'--- process {i}: exit {code}\n{self.output(i)[0][-2000:]}\n'
                          f'{self.output(i)[1][-4000:]}' for i, code in enumerate(codes))
      pytest.fail(f'a process failed or timed out (-9: killed here)\n{details}')
    return [self.output(i) for i in range(len(codes))]


def wait_for(path, job, timeout: float):
  deadline = time.time() + timeout
  while not path.exists():
    if time.time() > deadline or any(p.poll() is not None for p in job.processes):
      job.wait(0)  # Kills the others and reports.
      pytest.fail(f'{path} did not appear')
    time.sleep(0.1)


def _prepare_dataset(config_path):
  import importlib.util

  from clan_jax import datasets

  spec = importlib.util.spec_from_file_location('multihost_config', config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  datasets.prepare(module.get_config().dataset)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp('multihost')
  config = base / 'config.py'
  config.write_text(CONFIG.format(data_dir=str(base / 'data')))
  script = base / 'main64.py'
  script.write_text(SCRIPT)
  env = {k: v for k, v in cli_environment(base).items()
         if 'proxy' not in k.lower()}  # Loopback only.
  env['JAX_ENABLE_X64'] = '1'

  def command(workdir, *flags):
    return [sys.executable, str(script), f'--config={config}', f'--workdir={workdir}', *flags]

  def two_processes(workdir, logs):
    port = free_port()
    return Job([(command(workdir, f'--coordinator_address=127.0.0.1:{port}',
                         '--num_processes=2', f'--process_id={i}'), 2) for i in (0, 1)],
               env, logs)

  started = time.time()
  _prepare_dataset(config)  # Before the launches: several processes never build it.
  # The reference runs beside launch 1, which is then stopped by SIGTERM and resumed.
  reference_dir, workdir = base / 'one_process', base / 'two_processes'
  jobs = []
  try:
    jobs.append(Job([(command(reference_dir, '--config.checkpoint_every_steps=100'), 4)],
                    {**env, 'INITIAL_VARIABLES': str(base / 'initial.npz')},
                    base / 'reference'))
    jobs.append(two_processes(workdir, base / 'first'))
    wait_for(workdir / 'checkpoints' / '2', jobs[1], timeout=300)
    jobs[1].processes[1].send_signal(signal.SIGTERM)
    first_outputs = jobs[1].wait(120, status=EXIT_RESUMABLE)  # Both: stopped, to resume.
    jobs.append(two_processes(workdir, base / 'second'))
    second_outputs = jobs[2].wait(300)
    jobs[0].wait(300)
  finally:
    for job in jobs:  # Whatever failed, no process outlives the fixture.
      job.kill()
  print(f'multihost runs: {time.time() - started:.0f} s')
  return {'reference': reference_dir, 'workdir': workdir, 'initial': base / 'initial.npz',
          'first': first_outputs, 'second': second_outputs,
          'pids': [p.pid for job in jobs[1:] for p in job.processes]}


def final_state(workdir):
  """The latest checkpoint's arrays by path, restored into this one-device process (in
  float64: without x64, JAX would restore them as float32)."""
  import jax
  import orbax.checkpoint as ocp

  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with jax.enable_x64(True), ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                             item_handlers={'state': ocp.StandardCheckpointHandler()}) as manager:
    step = manager.latest_step()
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device),
        manager.item_metadata(step)['state'], is_leaf=lambda x: hasattr(x, 'shape'))
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(
        target)))['state']
  return step, {jax.tree_util.keystr(path): np.asarray(leaf)
                for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def stopped_step(stdout: str) -> int:
  assert 'stopped by SIGTERM at step ' in stdout, stdout
  return int(stdout.split('stopped by SIGTERM at step ')[1].split(';')[0])


def check_both_processes_stop_at_the_same_step_and_resume(runs):
  (out0, _), (out1, _) = runs['first']
  stopped = stopped_step(out0)
  assert stopped == stopped_step(out1), 'process 0 got no signal but stops with process 1'
  assert 2 <= stopped < STEPS
  (_, err0), _ = runs['second']
  assert f'resuming from the checkpoint at step {stopped}' in err0


def check_two_processes_train_like_one_process_with_as_many_devices(runs):
  initial = dict(np.load(runs['initial']))
  step, multi = final_state(runs['workdir'])
  reference_step, single = final_state(runs['reference'])
  assert step == reference_step == STEPS
  compared, worst = 0, 0.0
  for path, before in initial.items():
    assert before.dtype == multi[path].dtype == single[path].dtype == np.float64, path
    update = single[path] - before
    scale = np.max(np.abs(update))
    assert scale > 0, path
    worst = max(worst, float(np.max(np.abs(multi[path] - before - update)) / scale))
    compared += 1
  print(f'{compared} arrays; worst update difference / largest update: {worst:.1e}')
  assert compared == len(initial) > 100 and worst <= 1e-6, worst


def check_only_process_zero_writes_run_files_and_logs_progress(runs):
  workdir = runs['workdir']
  for (out0, err0), (out1, err1) in (runs['first'], runs['second']):
    assert 'WRITE' not in err1, [l for l in err1.splitlines() if l.startswith('WRITE')]
    assert 'ETA' not in err1 and 'fused train top-1' not in err1 and 'top-1' not in out1
    assert 'ETA' in err0 and 'fused train top-1' in err0
  # The hook sees process 0's writes (config.json, eval_results.json: a .tmp file renamed).
  written = {line.split()[-1] for line in runs['first'][0][1].splitlines() + runs['second'][0][
      1].splitlines() if line.startswith('WRITE ')}
  assert {str(workdir / 'config.json'), str(workdir / 'eval_results.json')} <= written, written
  assert 'top-1' in runs['second'][0][0]
  assert {'config.json', 'classes.json', 'eval_results.json', 'checkpoints'} <= set(
      os.listdir(workdir))
  events = [f for f in os.listdir(workdir) if f.startswith('events.out.tfevents')]
  writers = {int(name.split('.')[-3]) for name in events}  # events.out.tfevents.TIME.HOST.PID.0.v2
  first0, first1, second0, second1 = runs['pids']
  assert events and writers <= {first0, second0}, (events, runs['pids'])


def test_two_processes_stop_resume_match_one_process_and_only_process_zero_writes(runs):
  """One test for the three checks: the launches are the costly part, and one test keeps
  them on one pytest-xdist worker (a module fixture runs once per worker)."""
  check_both_processes_stop_at_the_same_step_and_resume(runs)
  check_two_processes_train_like_one_process_with_as_many_devices(runs)
  check_only_process_zero_writes_run_files_and_logs_progress(runs)
