"""Many processes, one job: starting JAX's distributed runtime from main.py's flags.

Every process of a job (one per host, or one per GPU) runs the same command. Process 0
hosts a coordinator; once every process has connected, `jax.devices()` lists the devices
of all processes, the mesh spans them (clan_jax/train/sharding.py) and jit runs each step on all
of them. Three ways to start:

    (no flag)                    one process: the devices of this machine
    --distributed                JAX reads the job from the environment (jax 0.10.2:
                                 Open MPI's mpirun, SLURM's srun, Cloud TPU VMs and GKE TPU
                                 pods, Kubernetes jobs with the `kubernetes` package);
                                 flags given with it override what is read
    --coordinator_address=HOST:PORT --num_processes=N --process_id=I
                                 explicit, for any machine; nothing is detected, so every
                                 local device (CUDA_VISIBLE_DEVICES) belongs to the process

The flags are checked without importing JAX (`launch_from_flags`); `initialize` must run
before anything creates a JAX backend (jax.devices(), a computation), which JAX enforces.
"""

import dataclasses
import logging
import os
from typing import Optional

from clan_jax.base.errors import UserError

# What `jax.distributed.initialize()` reads in jax 0.10.2 (jax/_src/clusters/).
DETECTED = 'Open MPI (mpirun), SLURM (srun), a Cloud TPU VM or GKE TPU pod, or Kubernetes'
EXPLICIT_FLAGS = ('--coordinator_address', '--num_processes', '--process_id')


@dataclasses.dataclass(frozen=True)
class Launch:
  """How to start the runtime: `detect` the unset fields from the environment or not."""
  detect: bool
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None


def _check_address(address: str) -> None:
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserError(f'--coordinator_address={address!r} is not HOST:PORT; give process 0\'s '
                    'address and a free port, e.g. --coordinator_address=10.0.0.1:1234.')


def launch_from_flags(distributed: bool, coordinator_address: str = '',
                      num_processes: Optional[int] = None,
                      process_id: Optional[int] = None) -> Optional[Launch]:
  """Checks the flags (without importing JAX); None means one process, no runtime."""
  given = dict(zip(EXPLICIT_FLAGS, (coordinator_address or None, num_processes, process_id)))
  if coordinator_address:
    _check_address(coordinator_address)
  if num_processes is not None and num_processes < 1:
    raise UserError(f'--num_processes={num_processes} is invalid; it counts the processes '
                    'of the job (1 or more).')
  if process_id is not None and (process_id < 0 or (num_processes is not None
                                                    and process_id >= num_processes)):
    bound = f'0 to {num_processes - 1}' if num_processes else '0 or more'
    raise UserError(f'--process_id={process_id} is invalid; allowed: {bound} (0 is the '
                    'coordinator, each process has its own id).')
  missing = [flag for flag, value in given.items() if value is None]
  if not distributed:
    if len(missing) == len(EXPLICIT_FLAGS):
      return None
    if missing:
      named = ' and '.join(flag for flag, value in given.items() if value is not None)
      raise UserError(f'{named} given without {" and ".join(missing)}: give all three, or add '
                      f'--distributed to read the missing ones from {DETECTED}.')
  return Launch(detect=bool(missing), coordinator_address=given['--coordinator_address'],
                num_processes=num_processes, process_id=process_id)


def initialize(launch: Optional[Launch], initialization_timeout: int = 300) -> None:
  """Starts JAX's distributed runtime (nothing for None); call it before any JAX backend.

  It waits up to `initialization_timeout` seconds for every process to connect; past that,
  or when a process of the job dies later, JAX's runtime ends the process itself (SIGABRT,
  'Terminating process because the JAX distributed service detected fatal errors').
  """
  if launch is None:
    return
  import jax  # Late: main.py imports this module for the flag checks, which run without JAX.

  # Cross-process collectives on CPU (tests, CPU clusters): gloo over TCP, jax 0.10.2's
  # default, set explicitly unless the environment chose one (e.g. 'mpi').
  if not os.environ.get('JAX_CPU_COLLECTIVES_IMPLEMENTATION'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if launch.detect:
    logging.info('starting JAX\'s distributed runtime from the environment (%s)', DETECTED)
  else:
    logging.info('joining the job as process %d of %d (coordinator %s); waiting up to %d s '
                 'for every process', launch.process_id, launch.num_processes,
                 launch.coordinator_address, initialization_timeout)
  try:
    jax.distributed.initialize(
        coordinator_address=launch.coordinator_address, num_processes=launch.num_processes,
        process_id=launch.process_id, initialization_timeout=initialization_timeout,
        cluster_detection_method=None if launch.detect else 'deactivate')
  except ValueError as e:  # Raised before connecting: what detection could not find.
    if launch.detect:
      raise UserError(f'--distributed found no job to join ({e}); it reads {DETECTED}. '
                      f'Elsewhere give {", ".join(EXPLICIT_FLAGS)}.') from None
    raise UserError(f'cannot start the distributed runtime: {e}') from None


def check_runtime() -> None:
  """Several processes need the runtime: Orbax's checkpoint barriers and the agreed stop
  on SIGTERM use it. (A TPU pod slice runs without it, so JAX does not insist.)"""
  import jax  # Late: as in initialize (main.py's flag checks run without JAX).

  if jax.process_count() > 1 and not jax.distributed.is_initialized():
    raise UserError(f'this job has {jax.process_count()} processes but JAX\'s distributed '
                    'runtime is not started: pass --distributed to main.py (or call '
                    'jax.distributed.initialize() first).')


def is_main_process() -> bool:
  """Process 0 writes the run's files and logs its progress; every process checkpoints."""
  import jax  # Late: as in initialize (main.py's flag checks run without JAX).

  return jax.process_index() == 0
