"""Meshes and global batches: data parallelism with jit over a Mesh and NamedSharding.

The mesh has one axis, 'data', over every device of every process. A batch is sharded
along 'data' (each device holds B / D examples) and the train state is replicated. Each
process feeds its own slice of the global batch (clan_jax.datasets.input_pipeline produces exactly
that slice) and `global_batch` assembles the global jax.Arrays without moving data between
hosts. Under jit, BatchNorm statistics are then over the global batch (like SyncBN).
"""

from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from clan_jax.base.errors import ConfigError

DATA_AXIS = 'data'


def create_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes), axis 'data'."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,),
              axis_types=(jax.sharding.AxisType.Auto,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over the devices (and so over the processes)."""
  if global_batch_size % mesh.size:
    raise ConfigError(f'batch_size={global_batch_size} is not divisible by the {mesh.size} '
                      f'devices; use a multiple of {mesh.size}.')


def global_batch(local_batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's slice of a batch (numpy) -> global jax.Arrays sharded over 'data'."""
  sharding = data_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in local_batch.items()}


def to_host(array: jax.Array) -> np.ndarray:
  """A global array as one numpy array on every process (gathered across hosts if needed)."""
  if jax.process_count() == 1:
    return np.asarray(array)
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))
