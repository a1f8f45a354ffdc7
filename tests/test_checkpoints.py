"""Variables-only Orbax checkpoints: exact round trip, never overwritten."""

import jax
import numpy as np
import pytest

from clan_jax.checkpoints import restore_variables, save_variables
from clan_jax.errors import CheckpointError


def test_round_trip_is_exact_and_existing_checkpoints_are_kept(tmp_path):
  rng = np.random.default_rng(0)
  variables = {'params': {'fc': {'kernel': rng.standard_normal((4, 3)).astype(np.float32)}},
               'batch_stats': {'bn1': {'mean': rng.standard_normal(3).astype(np.float32)}}}
  path = save_variables(variables, tmp_path / 'init')
  restored = restore_variables(path)
  assert jax.tree.structure(restored) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), b)
  with pytest.raises(CheckpointError, match='already exists; it is never overwritten'):
    save_variables({'params': {}}, path)
  np.testing.assert_array_equal(restore_variables(path)['params']['fc']['kernel'],
                                variables['params']['fc']['kernel'])
  with pytest.raises(CheckpointError, match='no such checkpoint directory'):
    restore_variables(tmp_path / 'absent')


def test_resuming_with_another_optimizer_names_the_optimizer(tmp_path):
  import jax.numpy as jnp
  import optax

  from clan_jax import steps
  from clan_jax.checkpoints import TrainCheckpoints

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
