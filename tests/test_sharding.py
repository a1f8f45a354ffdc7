"""Meshes and global batches on 8 fake CPU devices (a subprocess: XLA reads the flag once)."""

import os
import subprocess
import sys
import textwrap

from helpers.commands import REPO_ROOT

SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from clan_jax.train import sharding
    from clan_jax.base.errors import ConfigError
    mesh = sharding.create_mesh()
    assert mesh.size == 8 and mesh.axis_names == ('data',)
    local = {'image': np.arange(16 * 2 * 2 * 3, dtype=np.uint8).reshape(16, 2, 2, 3),
             'label': np.arange(16, dtype=np.int32)}
    batch = sharding.global_batch(local, mesh)
    assert batch['image'].shape == (16, 2, 2, 3) and batch['label'].dtype == np.int32
    assert len(batch['label'].addressable_shards) == 8
    for shard in batch['label'].addressable_shards:  # Device i holds examples [2i, 2i + 2).
      start = shard.index[0].start
      np.testing.assert_array_equal(shard.data, np.arange(start, start + 2))
    total = jax.jit(lambda x: x.sum())(batch['label'])
    assert int(total) == 120
    sharding.check_batch_size(16, mesh)
    try:
      sharding.check_batch_size(12, mesh)
    except ConfigError as e:
      assert 'not divisible by the 8 devices' in str(e)
    else:
      raise AssertionError('batch 12 over 8 devices was accepted')
    print('ok')
''')


def test_global_batch_is_sharded_over_the_data_axis():
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr
