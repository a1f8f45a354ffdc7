"""The main job end to end: train, resume after SIGKILL bit for bit, SIGTERM and SIGINT, a
damaged checkpoint, NaN, eval.

Runs `python main.py` in subprocesses on a tiny CLAN-R18 and a small synthetic dataset,
sharing a persistent compilation cache so that each run compiles little.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from clan_jax.base.cli import EXIT_RESUMABLE
from clan_jax.train.checkpoints import read_run_meta
from helpers.commands import REPO_ROOT, cli_environment

CONFIG = '''
from configs import default


def get_config():
  config = default.get_config()
  config.model.update(depth=18, clca_dim=16, head_dim=16)
  config.dataset.update(name='synthetic', data_dir={data_dir!r}, resize_size=40, crop_size=32,
                        cache=True)
  # Stands for a validation split (the synthetic dataset has none): the best checkpoint is
  # chosen on its top-1, not on the eval split's.
  config.dataset.val_split = 'train'
  config.dataset.synthetic.update(num_classes=4, image_size=48, train_per_class=8,
                                  test_per_class=3)
  config.update(batch_size=8, num_train_steps=12, log_every_steps=4, eval_every_steps=8,
                checkpoint_every_steps=4, keep_checkpoints=2)
  config.optimizer.update(learning_rate=0.02, backbone_learning_rate=0.02, warmup_epochs=1.0)
  config.visualize.every_eval = False  # TensorBoard figures: tests/test_visualize.py.
  return config
'''


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """A config file and an environment shared by the module's runs."""
  base = tmp_path_factory.mktemp('train')
  config = base / 'tiny_config.py'
  config.write_text(CONFIG.format(data_dir=str(base / 'data')))
  return {'config': str(config), 'env': cli_environment(base), 'base': base}


def main_py(env, workdir, *flags):
  return [sys.executable, os.path.join(REPO_ROOT, 'main.py'), f'--config={env["config"]}',
          f'--workdir={workdir}', *flags]


def run(env, workdir, *flags, returncode=0):
  result = subprocess.run(main_py(env, workdir, *flags), cwd=REPO_ROOT, env=env['env'],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == returncode, (
      f'exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}')
  return result


CHOSEN_ON_VAL = {'selected_on': 'train split top-1', 'selection_split': 'validation'}


def read_json(path):
  with open(path) as f:
    return json.load(f)


def final_state(workdir):
  """The arrays of the latest checkpoint's state, as numpy, by tree path."""
  import jax
  import orbax.checkpoint as ocp

  directory = os.path.join(workdir, 'checkpoints')
  with ocp.CheckpointManager(directory, item_names=('state', 'meta')) as manager:
    step = manager.latest_step()
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  leaves = jax.tree_util.tree_flatten_with_path(state['state'])[0]
  return step, {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


@pytest.fixture(scope='module')
def uninterrupted(env):
  workdir = env['base'] / 'uninterrupted'
  result = run(env, workdir)
  return workdir, result


def test_end_to_end_run_writes_results_config_classes_and_checkpoints(uninterrupted):
  workdir, result = uninterrupted
  results = read_json(workdir / 'eval_results.json')
  assert set(results) == {'fused', 'heads', 'per_class_top1', 'num_examples', 'protocol'}
  assert results['num_examples'] == 12
  assert set(results['heads']) == {'top', 'layer2', 'layer3', 'concat'}
  for metrics in [results['fused'], *results['heads'].values()]:
    assert set(metrics) == {'top1', 'top5', 'loss'}
    assert 0 <= metrics['top1'] <= metrics['top5'] <= 1 and np.isfinite(metrics['loss'])
  assert len(results['per_class_top1']) == 4
  assert all(v is None or 0 <= v <= 1 for v in results['per_class_top1'])
  assert results['protocol'] == {
      'split': 'test', 'checkpoint': 'final', 'step': 12, 'crop': 'center', 'image_size': 32,
      'fusion': 'sum', 'dtype': 'float32', 'best_checkpoint': CHOSEN_ON_VAL}
  assert read_json(workdir / 'config.json')['batch_size'] == 8
  assert len(read_json(workdir / 'classes.json')['classes']) == 4
  # Last 2 (8, 12) plus the best evaluated one; 4 was dropped.
  steps = sorted(int(d) for d in os.listdir(workdir / 'checkpoints') if d.isdigit())
  assert steps[-2:] == [8, 12] and 4 not in steps
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))
  assert 'ETA' in result.stderr
  # The end: the result beside chance, where the outputs are, the next commands.
  end = result.stdout.splitlines()[-7:]
  assert end[0].startswith('test top-1 (fused: sum): ')
  assert '(chance 0.2500: 4 classes)' in end[0]
  assert end[1].startswith(f'outputs in {workdir}: eval_results.json, config.json')
  assert end[2] == 'next:' and f'python -m clan_jax.predict --workdir={workdir} IMAGE' in end[3]
  assert f'python main.py --workdir={workdir} --mode=eval --checkpoint=best' in end[-1]
  assert ('compute dtype float32, from step 0; best checkpoint chosen on the train split top-1 '
          '(validation)') in result.stderr


def test_a_finished_run_started_again_says_so_and_trains_nothing(env, uninterrupted):
  workdir, _ = uninterrupted
  before = {str(p): p.stat().st_mtime_ns for p in workdir.rglob('*')}
  result = run(env, workdir)
  assert result.stdout.startswith(f'{workdir} is a finished run (trained to step 12 of 12, '
                                  'evaluated): nothing to train, nothing changed.\n')
  assert 'to train again, run the same command with another --workdir' in result.stdout
  assert 'resuming' not in result.stderr and 'training CLAN' not in result.stderr
  assert {str(p): p.stat().st_mtime_ns for p in workdir.rglob('*')} == before


def test_the_log_has_a_line_per_log_step_and_evaluation_and_the_metrics_a_file(uninterrupted):
  workdir, result = uninterrupted
  lines = [line for line in result.stderr.splitlines() if ' loop.py:' in line]
  steps = [line.split('] ', 1)[1] for line in lines if '] step ' in line]
  assert [s.split(':')[0] for s in steps] == ['step 4/12', 'step 8/12', 'step 12/12']
  assert re.fullmatch(r'step 8/12: loss \d+\.\d{4}, fused train top-1 [01]\.\d{4}, [\d.]+ '
                      r'images/s, [\d.]+ (steps/s|s/step), ETA \d+:\d\d:\d\d', steps[1]), steps
  evals = [line.split('] ', 1)[1] for line in lines if '] eval @ ' in line]
  assert [e.split(':')[0] for e in evals] == ['eval @ step 8', 'eval @ step 12']
  assert re.fullmatch(r'eval @ step 12: fused top-1 [\d.]+, top-5 [\d.]+, per head top [\d.]+ '
                      r'layer2 [\d.]+ layer3 [\d.]+ concat [\d.]+; val top-1 [\d.]+ '
                      r'\(train split\)', evals[1]), evals
  assert max(len(line) for line in lines) <= 200
  for internal in ('Got images', 'uptime', 'Setting work unit notes', 'train_loss='):
    assert internal not in result.stderr
  with open(workdir / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if 'train_loss' in r]
  assert [r['step'] for r in train] == [4, 8, 12]
  assert all(r['steps_per_sec'] > 0 and r['images_per_sec'] > 0 for r in train)
  evaluated = [r for r in records if 'eval_top1_fused' in r]
  assert [r['step'] for r in evaluated] == [8, 12]
  final = read_json(workdir / 'eval_results.json')['fused']['top1']
  assert evaluated[-1]['eval_top1_fused'] == final


def test_sigkill_then_resume_is_bit_identical(env, uninterrupted):
  reference_dir, _ = uninterrupted
  workdir = env['base'] / 'killed'
  process = subprocess.Popen(main_py(env, workdir), cwd=REPO_ROOT, env=env['env'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not (workdir / 'checkpoints' / '4').exists() and time.time() < deadline:
    time.sleep(0.2)
  time.sleep(0.5)  # Somewhere between checkpoints 4 and 8.
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (workdir / 'eval_results.json').exists()
  result = run(env, workdir)
  assert 'resuming from the checkpoint at step' in result.stderr
  assert read_json(workdir / 'eval_results.json') == read_json(reference_dir /
                                                               'eval_results.json')
  step, state = final_state(workdir)
  reference_step, reference = final_state(reference_dir)
  assert step == reference_step == 12 and state.keys() == reference.keys()
  for path in state:
    assert np.array_equal(state[path], reference[path]), path


def test_sigint_asks_the_loop_to_stop_as_sigterm_does():
  """SIGINT (Ctrl-C) takes the path SIGTERM takes end to end below: checkpoint, status 75."""
  from clan_jax.train.loop import _Signals

  before = signal.getsignal(signal.SIGINT)
  signals = _Signals()
  try:
    assert not signals.stop_at(1)
    os.kill(os.getpid(), signal.SIGINT)  # Handled: no KeyboardInterrupt.
    assert signals.stop_at(2) and signals.received == 'SIGINT'
  finally:
    signals.restore()
  assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize('name', ['SIGTERM'])
def test_a_signal_saves_a_checkpoint_and_exits_with_the_resumable_status(env, name):
  workdir = env['base'] / f'stopped_by_{name}'
  process = subprocess.Popen(main_py(env, workdir, '--config.num_train_steps=400'),
                             cwd=REPO_ROOT, env=env['env'], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not (workdir / 'checkpoints' / '4').exists() and time.time() < deadline:
    time.sleep(0.2)
  process.send_signal(getattr(signal, name))
  stdout, stderr = process.communicate(timeout=120)
  # 75: neither finished (0) nor failed; a requeue loop reruns the command on it.
  assert process.returncode == EXIT_RESUMABLE == 75, stderr[-3000:]
  assert f'stopped by {name} at step' in stdout and 'Traceback' not in stderr
  stopped_at = int(stdout.split(f'stopped by {name} at step ')[1].split(';')[0])
  assert 4 <= stopped_at < 400
  assert (workdir / 'checkpoints' / str(stopped_at)).exists()
  assert not (workdir / 'eval_results.json').exists()


def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_run_resumes_before_it(
    env, uninterrupted):
  reference_dir, _ = uninterrupted
  workdir = env['base'] / 'damaged'
  shutil.copytree(reference_dir, workdir)
  (workdir / 'eval_results.json').unlink()  # As if stopped just after its last checkpoint.
  data = max((p for p in (workdir / 'checkpoints' / '12').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)
  with open(data, 'r+b') as f:  # A copy or a disk that failed: a truncated file.
    f.truncate(data.stat().st_size // 2)
  truncated_size, inside = data.stat().st_size, data.relative_to(workdir / 'checkpoints' / '12')
  result = run(env, workdir)
  moved = os.listdir(workdir / 'damaged_checkpoints')
  assert len(moved) == 1 and moved[0].startswith('12-')
  assert (f'checkpoint step 12 in {workdir}/checkpoints cannot be read (OUT_OF_RANGE: '
          in result.stderr)
  assert (f'moved to {workdir}/damaged_checkpoints/{moved[0]}; resuming from step 8'
          in result.stderr and 'Traceback' not in result.stderr)
  # Moved as it was, never deleted.
  assert (workdir / 'damaged_checkpoints' / moved[0] / inside).stat().st_size == truncated_size
  # Steps 9 to 12 again, exactly: the same results as the run that was never damaged.
  assert read_json(workdir / 'eval_results.json') == read_json(reference_dir /
                                                               'eval_results.json')


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(env):
  workdir = env['base'] / 'nan'
  result = run(env, workdir, '--config.optimizer.learning_rate=1e30',
               '--config.optimizer.backbone_learning_rate=1e30',
               '--config.optimizer.warmup_epochs=0.0', '--config.checkpoint_every_steps=1',
               returncode=2)
  assert 'the loss became' in result.stderr and 'Traceback' not in result.stderr
  bad_step = int(result.stderr.split(' at step ')[1].split(';')[0])
  kept = sorted(int(d) for d in os.listdir(workdir / 'checkpoints') if d.isdigit())
  assert kept and max(kept) < bad_step
  assert f'the last good checkpoint is step {max(kept)}' in result.stderr
  assert not (workdir / 'eval_results.json').exists()


def test_eval_mode_of_latest_and_best_checkpoints(env, uninterrupted):
  reference_dir, _ = uninterrupted
  # What a training running in the same workdir would have half-written: eval leaves it.
  in_progress = reference_dir / 'checkpoints' / '99.orbax-checkpoint-tmp-1795778022'
  in_progress.mkdir()
  try:  # No --config: the run's config.json.
    latest = subprocess.run([sys.executable, 'main.py', f'--workdir={reference_dir}',
                             '--mode=eval'], cwd=REPO_ROOT, env=env['env'],
                            capture_output=True, text=True, timeout=300)
    assert latest.returncode == 0, latest.stderr[-4000:]
    assert in_progress.is_dir(), 'eval removed the checkpoint of a training in progress'
  finally:
    in_progress.rmdir()
  results = read_json(reference_dir / 'eval_results.json')
  assert results['protocol']['checkpoint'] == 'latest' and results['protocol']['step'] == 12
  assert 'top-1' in latest.stdout
  run(env, reference_dir, '--mode=eval', '--checkpoint=best', '--config.eval.flip=True')
  best = read_json(reference_dir / 'eval_results.json')['protocol']
  assert best['checkpoint'] == 'best' and best['step'] in (8, 12)
  assert best['crop'] == 'center+flip'
  # What the training recorded: chosen on the validation split, the highest of its top-1s.
  assert {k: best[k] for k in CHOSEN_ON_VAL} == CHOSEN_ON_VAL
  metas = {step: read_run_meta(reference_dir / 'checkpoints', step) for step in (8, 12)}
  assert all(meta['val']['split'] == 'train' for meta in metas.values())
  assert metas[best['step']]['val']['top1'] == max(m['val']['top1'] for m in metas.values())


def test_eval_without_a_checkpoint_is_one_message_without_traceback(env, tmp_path):
  # An open Orbax manager's clean-up thread used to print a traceback after the message.
  # '~/empty': the shell passes a ~ after '=' as it is; it is the home folder.
  home_env = {**env, 'env': {**env['env'], 'HOME': str(tmp_path)}}
  result = run(home_env, '~/empty', '--mode=eval', returncode=2)
  assert f'no checkpoint in {tmp_path}/empty/checkpoints' in result.stderr
  assert 'Traceback' not in result.stderr and not (REPO_ROOT / '~').exists()


def test_best_without_an_evaluated_checkpoint_points_to_latest(tmp_path):
  from clan_jax.base.errors import UserError
  from clan_jax.train import checkpoints

  saved = checkpoints.TrainCheckpoints(tmp_path / 'checkpoints', keep_last=2)
  saved.save(3, {'params': {'w': np.zeros(2, np.float32)}}, {'step': 3})  # No eval metrics.
  saved.wait()
  saved.close()
  with pytest.raises(UserError, match='no evaluated checkpoint in .*use --checkpoint=latest'):
    checkpoints.load_run_variables(tmp_path / 'checkpoints', 'best', lambda: None)


@pytest.mark.parametrize('flags, message', [
    (['--config.model.dept=18'], 'did you mean model.depth'),
    (['--config.model.depth=20'], 'model.depth=20 is invalid'),
    (['--config.dataset.crop_size=100'], 'dataset.crop_size=100 is not a multiple of 32'),
    (['--config.batch_size=6', '--config.eval_batch_size=8'],
     'batch_size=6 is not divisible by the 4 devices'),
    (['--config.dataset.name=cub', '--config.dataset.manual_dir=/nonexistent',
      '--config.init.from_scratch=True'], 'CUB_200_2011.tgz'),
])
def test_config_and_data_errors_are_messages_before_compiling(env, tmp_path, flags, message):
  environment = {**env['env'], 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  result = subprocess.run(main_py(env, tmp_path / 'new' / 'run', *flags), cwd=REPO_ROOT,
                          env=environment, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert list(tmp_path.iterdir()) == []  # The folders the run created, removed again.


def test_eval_of_a_pytorch_checkpoint_equals_the_twins_accuracy(env, tmp_path):
  import importlib.util

  import torch

  from clan_jax.datasets import input_pipeline, preprocess
  from clan_jax.pytorch.twin import create_torch_model
  from helpers.torch_helpers import randomize_, to_nchw

  loader = importlib.util.spec_from_file_location('tiny_config', env['config'])
  module = importlib.util.module_from_spec(loader)
  loader.loader.exec_module(module)
  config = module.get_config()
  twin = randomize_(create_torch_model(config.model, 4), seed=21).eval()
  path = tmp_path / 'twin.pth'
  torch.save(twin.state_dict(), path)
  # A whole model's file is named by --checkpoint (an init.torch_checkpoint is an ImageNet
  # backbone unless init.torch_backbone_only=False: test_model_source.py).
  run(env, tmp_path / 'eval', '--mode=eval', f'--checkpoint={path}')
  results = read_json(tmp_path / 'eval' / 'eval_results.json')
  assert results['protocol']['checkpoint'] == 'torch'

  data = input_pipeline.load_split(config.dataset, 'test')
  hits, losses, count = {}, {}, 0
  for batch in input_pipeline.eval_dataset(data, config.dataset,
                                           global_batch_size=8).as_numpy_iterator():
    mask = batch['mask']
    images = preprocess.normalize(batch['image'][mask])
    labels = torch.from_numpy(batch['label'][mask].astype(np.int64))
    with torch.no_grad():
      outputs = twin(to_nchw(images))
    for head, logits in {'fused': outputs['logits'], **outputs['heads']}.items():
      hits[head] = hits.get(head, 0) + int((logits.argmax(-1) == labels).sum())
      loss = torch.nn.functional.cross_entropy(logits, labels, reduction='sum')
      losses[head] = losses.get(head, 0.0) + float(loss)
    count += int(mask.sum())
  assert count == results['num_examples'] == 12
  for head in hits:
    ours = results['fused'] if head == 'fused' else results['heads'][head]
    assert ours['top1'] == hits[head] / count, head
    assert abs(ours['loss'] - losses[head] / count) <= 1e-5 * abs(losses[head] / count), head


def test_a_checkpoint_that_does_not_fit_names_the_mismatched_parameters(env, uninterrupted):
  import shutil

  reference_dir, _ = uninterrupted
  workdir = env['base'] / 'mismatch'
  shutil.copytree(reference_dir / 'checkpoints', workdir / 'checkpoints')
  result = run(env, workdir, '--config.model.head_dim=24', returncode=2)
  assert 'does not fit the configuration' in result.stderr
  assert "['heads_layer2']['conv']['kernel']: checkpoint (1, 1, 128, 16), model (1, 1, 128, 24)" \
      in result.stderr
  assert 'Traceback' not in result.stderr
