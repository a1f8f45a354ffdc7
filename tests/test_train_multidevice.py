"""Data parallelism: the train step sharded over 8 CPU devices equals the one-device step.

A subprocess, since XLA reads --xla_force_host_platform_device_count once per process.
In float64: the sharded step reorders the reductions (BN statistics, the gradient sum), and
in float32 this tiny randomly initialised CLAN amplifies those rounding differences from
3e-4 after one step to 5e-2 after three (measured; the float32 twins drift alike), which
would hide a real difference instead of proving equality.
"""

import os
import subprocess
import sys
import textwrap

from helpers.commands import REPO_ROOT

SCRIPT = textwrap.dedent('''
    import types
    import jax, jax.numpy as jnp, numpy as np
    from clan_jax.train import loop as train
    from clan_jax.train import optim, sharding, steps
    from clan_jax.convert import flax_to_torch_arrays
    from clan_jax.models import create_model
    from configs import default

    assert jax.device_count() == 8
    config = default.get_config()
    config.model.update(depth=18, clca_dim=16, head_dim=16)
    config.optimizer.update(learning_rate=0.05, backbone_learning_rate=0.05)
    model = create_model(config.model, 5)
    # On the host: each run's state is built (and then donated) from copies.
    variables = jax.device_get(
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False))
    variables = jax.tree.map(lambda x: np.asarray(x, np.float64), variables)
    rng = np.random.default_rng(0)
    batches = [{'image': rng.integers(0, 256, (8, 64, 64, 3), np.uint8),
                'label': rng.integers(0, 5, 8).astype(np.int32)} for _ in range(3)]

    def three_steps(devices):
      mesh = sharding.create_mesh(devices)
      run = types.SimpleNamespace(mesh=mesh, model=model, config=config)
      tx, schedules = optim.create_optimizer(config.optimizer, variables['params'],
                                             num_classes=5, batch_size=8, total_steps=10,
                                             warmup_steps=0)
      state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                               batch_stats=variables['batch_stats'],
                               opt_state=tx.init(variables['params']))
      state = jax.device_put(state, sharding.replicated_sharding(mesh))
      train_fn, _ = train.compile_steps(run, tx, schedules)
      for batch in batches:
        state, _ = train_fn(state, sharding.global_batch(batch, mesh))
      assert state.params['fc']['kernel'].sharding.mesh.size == len(devices)
      return flax_to_torch_arrays(jax.device_get(state.variables))

    before = flax_to_torch_arrays(variables)
    one, eight = three_steps(jax.devices()[:1]), three_steps(jax.devices())
    worst = 0.0
    for key in one:
      update_one, update_eight = one[key] - before[key], eight[key] - before[key]
      scale = np.max(np.abs(update_one))
      assert scale > 0, key
      worst = max(worst, float(np.max(np.abs(update_one - update_eight)) / scale))
    print('worst relative difference', worst)
    assert worst <= 1e-6, worst
''')


def test_eight_device_train_steps_equal_one_device():
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'JAX_PLATFORMS': 'cpu', 'JAX_ENABLE_X64': '1', 'PYTHONPATH': str(REPO_ROOT)}
  result = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  assert 'worst relative difference' in result.stdout, result.stdout
