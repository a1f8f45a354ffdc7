"""Orbax checkpoints: variables-only ones (exact round trip, never overwritten), a run's (fit
checks, failed saves, the best), damaged ones (named, moved aside by training only)."""

import os
import re

import jax
import numpy as np
import pytest

from clan_jax.train.checkpoints import load_variables_checkpoint, save_variables
from clan_jax.base.errors import CheckpointError


def test_round_trip_is_exact_and_existing_checkpoints_are_kept(tmp_path):
  rng = np.random.default_rng(0)
  variables = {'params': {'fc': {'kernel': rng.standard_normal((4, 3)).astype(np.float32)}},
               'batch_stats': {'bn1': {'mean': rng.standard_normal(3).astype(np.float32)}}}
  path = save_variables(variables, tmp_path / 'init')
  restored = load_variables_checkpoint(path)
  assert jax.tree.structure(restored) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), b)
  with pytest.raises(CheckpointError, match='already exists; it is never overwritten'):
    save_variables({'params': {}}, path)
  np.testing.assert_array_equal(load_variables_checkpoint(path)['params']['fc']['kernel'],
                                variables['params']['fc']['kernel'])
  with pytest.raises(CheckpointError, match='no such checkpoint directory'):
    load_variables_checkpoint(tmp_path / 'absent')


def test_resuming_with_another_optimizer_names_the_optimizer(tmp_path):
  import jax.numpy as jnp
  import optax

  from clan_jax.train import steps
  from clan_jax.train.checkpoints import TrainCheckpoints

  params, stats = {'w': jnp.ones((3,))}, {'mean': jnp.zeros((3,))}
  sgd = steps.create_train_state(params, stats, optax.sgd(0.1, momentum=0.9))
  adamw = steps.create_train_state(params, stats, optax.adamw(0.1))
  saved = TrainCheckpoints(tmp_path / 'checkpoints', keep_last=2)
  saved.save(1, sgd, {'step': 1})
  saved.wait()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), adamw)
  try:
    with pytest.raises(CheckpointError, match=r'opt_state: the optimizer state saved there has '
                       r"another structure than this config's optimizer \(optimizer.name"):
      saved.restore(1, target)
  finally:
    saved.close()


def test_unwritable_places_are_messages_before_any_save(tmp_path):
  from clan_jax.train.checkpoints import TrainCheckpoints

  a_file = tmp_path / 'image.png'
  a_file.write_bytes(b'not a folder')
  with pytest.raises(CheckpointError, match='the output folder .*image.png is a file'):
    save_variables({'params': {}}, a_file / 'out')
  with pytest.raises(CheckpointError, match='cannot write the output folder'):
    save_variables({'params': {}}, a_file / 'sub' / 'out')  # Its parent cannot be made.
  with pytest.raises(CheckpointError, match='the checkpoint folder .*image.png is a file'):
    TrainCheckpoints(a_file, keep_last=1)
  assert a_file.read_bytes() == b'not a folder'


def test_a_failed_save_stops_with_a_message_and_keeps_the_earlier_checkpoints(tmp_path,
                                                                                monkeypatch):
  """Saves are synchronous, so a write error surfaces in save() (Orbax's asynchronous
  writer logged it, trained on without checkpoints and hung at the end)."""
  from clan_jax.train.checkpoints import TrainCheckpoints

  checkpoints = TrainCheckpoints(tmp_path / 'checkpoints', keep_last=2)
  state = {'w': np.ones(4, np.float32)}
  checkpoints.save(1, state, {'step': 1})
  assert not checkpoints.manager._options.enable_async_checkpointing  # pylint: disable=protected-access

  def disk_full(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(checkpoints.manager, 'save', disk_full)
  with pytest.raises(CheckpointError, match='step 2 could not be written .*No space left on '
                     'device. The run stops; its earlier checkpoints are intact'):
    checkpoints.save(2, state, {'step': 2})
  assert checkpoints.latest_step() == 1


def test_an_init_checkpoint_that_is_not_a_variables_checkpoint_is_named(tmp_path):
  from clan_jax.train.checkpoints import TrainCheckpoints

  checkpoints = TrainCheckpoints(tmp_path / 'checkpoints', keep_last=1)
  checkpoints.save(3, {'w': np.ones(2, np.float32)}, {'step': 3})
  checkpoints.wait()
  with pytest.raises(CheckpointError, match="a training run's checkpoint .*give its --workdir"):
    load_variables_checkpoint(tmp_path / 'checkpoints' / '3')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(CheckpointError, match='has no _METADATA.*not a checkpoint'):
    load_variables_checkpoint(tmp_path / 'empty')


def test_a_variables_checkpoint_is_read_like_the_model_or_every_mismatch_is_named(tmp_path):
  from clan_jax.train.checkpoints import load_variables_checkpoint_like

  saved = {'params': {'fc': {'kernel': np.ones((4, 3), np.float64)}}}
  path = save_variables(saved, tmp_path / 'init')
  expected = {'params': {'fc': {'kernel': jax.ShapeDtypeStruct((4, 3), np.float32)}}}
  loaded = load_variables_checkpoint_like(path, expected, 'init.checkpoint=x')
  assert loaded['params']['fc']['kernel'].dtype == np.float32  # The model's dtype.
  wider = {'params': {'fc': {'kernel': jax.ShapeDtypeStruct((5, 3), np.float32),
                             'bias': jax.ShapeDtypeStruct((3,), np.float32)}}}
  with pytest.raises(CheckpointError, match=r"init.checkpoint=x does not fit the model:\n  "
                     r"missing from the checkpoint: \['params'\]\['fc'\]\['bias'\]\n  "
                     r"\['params'\]\['fc'\]\['kernel'\]: checkpoint \(4, 3\), model \(5, 3\)"):
    load_variables_checkpoint_like(path, wider, 'init.checkpoint=x')


def test_the_best_is_ranked_on_the_metric_given_and_its_meta_is_read_back(tmp_path):
  from clan_jax.train.checkpoints import TrainCheckpoints, load_run_variables, read_run_meta

  saved = TrainCheckpoints(tmp_path / 'checkpoints', keep_last=1)
  state = {'params': {'w': np.zeros(2, np.float32)}, 'batch_stats': {}}
  # The selection metric (a validation split's top-1) disagrees with the eval split's.
  for step, val_top1, eval_top1 in ((2, 0.9, 0.1), (4, 0.2, 0.8), (6, 0.5, 0.7)):
    meta = {'step': step, 'eval': {'split': 'test', 'top1': eval_top1},
            'val': {'split': 'val', 'top1': val_top1}}
    saved.save(step, state, meta, metrics={'top1': val_top1})
  saved.wait()
  saved.close()
  target = lambda: {'params': {'w': jax.ShapeDtypeStruct((2,), np.float32)}, 'batch_stats': {}}
  _, best = load_run_variables(tmp_path / 'checkpoints', 'best', target)
  assert best == 2
  assert read_run_meta(tmp_path / 'checkpoints', best)['val'] == {'split': 'val', 'top1': 0.9}


def _saved_run(tmp_path, steps):
  """A training run's checkpoints of a small state (random, so that the arrays' data lies in
  files of their own), its state and the state's layout for restoring."""
  import jax.numpy as jnp
  import optax

  from clan_jax.train import steps as train_steps
  from clan_jax.train.checkpoints import TrainCheckpoints

  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.standard_normal(2000), jnp.float32)}
  state = train_steps.create_train_state(params, {'mean': jnp.zeros(3)},
                                         optax.sgd(0.1, momentum=0.9))
  saved = TrainCheckpoints(tmp_path / 'checkpoints', keep_last=len(steps))
  for step in steps:
    saved.save(step, state.replace(params={'w': params['w'] + step}), {'step': step},
               metrics={'top1': 0.1 * step})  # The newest is the best.
  saved.wait()
  saved.close()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)
  return params['w'], target


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(path.stat().st_size // 2)


def _largest_file(folder):
  return max((p for p in folder.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


def _listing(folder):
  return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob('*'))


def test_damaged_newest_checkpoints_are_named_moved_aside_and_the_newest_readable_restored(
    tmp_path, caplog):
  from clan_jax.train.checkpoints import TrainCheckpoints, load_run_variables

  w, target = _saved_run(tmp_path, steps=(1, 2, 3))
  folder = tmp_path / 'checkpoints'
  _truncate(_largest_file(folder / '3' / 'state'))  # An array's data.
  _truncate(folder / '2' / 'state' / '_METADATA')  # The layout.
  before = _listing(tmp_path)
  # Inference ('latest') reads the newest readable one and moves nothing.
  variables, step = load_run_variables(
      folder, 'latest', lambda: {'params': target.params, 'batch_stats': target.batch_stats})
  assert step == 1 and np.array_equal(variables['params']['w'], w + 1)
  assert _listing(tmp_path) == before
  assert 'checkpoint step 3 in ' in caplog.text and 'using step 1 (nothing moved' in caplog.text
  caplog.clear()
  checkpoints = TrainCheckpoints(folder, keep_last=3)
  try:
    state, step = checkpoints.restore_newest_readable(target)
    assert step == 1 and np.array_equal(state.params['w'], w + 1)
    damaged = tmp_path / 'damaged_checkpoints'
    moved = sorted(os.listdir(damaged))
    assert [name.split('-')[0] for name in moved] == ['2', '3'] and os.listdir(folder) == ['1']
    warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert len(warnings) == 2
    for name, warning in zip(moved, sorted(warnings)):
      assert re.fullmatch(rf'checkpoint step {name[0]} in {re.escape(str(folder))} cannot be '
                          rf'read \(.+\); moved to {re.escape(str(damaged / name))}; resuming '
                          'from step 1', warning), warning
    assert 'OUT_OF_RANGE' in sorted(warnings)[1]  # What TensorStore said of the short file.
    # Moved, not changed: every file as it was (the damaged ones too).
    assert _listing(damaged / moved[1]) == [(path[len('checkpoints/3/'):], size)
                                            for path, size in before
                                            if path.startswith('checkpoints/3/')]
    checkpoints.save(4, state, {'step': 4})  # Orbax forgot the moved ones.
    checkpoints.wait()
    assert checkpoints.manager.all_steps() == [1, 4]
  finally:
    checkpoints.close()


def test_no_readable_checkpoint_is_a_message_and_nothing_moves(tmp_path):
  from clan_jax.train.checkpoints import TrainCheckpoints, load_run_variables, read_run_meta

  _, target = _saved_run(tmp_path, steps=(1, 2))
  folder = tmp_path / 'checkpoints'
  _truncate(_largest_file(folder / '2' / 'state'))
  _truncate(folder / '1' / 'state' / '_METADATA')
  (folder / '1' / 'meta' / 'metadata').unlink()  # A missing piece.
  before = _listing(tmp_path)
  checkpoints = TrainCheckpoints(folder, keep_last=2)
  try:
    with pytest.raises(CheckpointError, match=rf'(?s)no checkpoint in {re.escape(str(folder))} '
                       r'can be read:\n'
                       r'  step 2: OUT_OF_RANGE: .+\n  step 1: its meta: .+\nNothing was '
                       'moved or deleted'):
      checkpoints.restore_newest_readable(target)
  finally:
    checkpoints.close()
  variables = lambda: {'params': target.params, 'batch_stats': target.batch_stats}
  with pytest.raises(CheckpointError, match='no checkpoint in .* can be read'):
    load_run_variables(folder, 'latest', variables)
  with pytest.raises(CheckpointError, match=r'the best checkpoint, step 2 in .*, cannot be read '
                     r'\(OUT_OF_RANGE: .+\); use --checkpoint=latest'):
    load_run_variables(folder, 'best', variables)
  with pytest.raises(CheckpointError, match='the meta of checkpoint step 1 in .* cannot be read'):
    read_run_meta(folder, 1)
  assert _listing(tmp_path) == before
