"""--ceilings (clan_jax/benchmark.py): what the device itself reaches, the yardsticks of a
step's figures: the bandwidth of an elementwise pass (an array read and written once) and
the TFLOP/s of a square matrix product in bfloat16 and float32. Measured in a worker process;
the parent imports no JAX (so that it holds no device memory)."""

import statistics
import time
from typing import Callable

# Sizes when the flags leave them at 0: a GPU's, or a small CPU's.
DEFAULT_COPY_MIB = {'gpu': 1024, 'cpu': 64}
DEFAULT_MATMUL_SIZE = {'gpu': 8192, 'cpu': 1024}
MATMUL_DTYPES = ('bfloat16', 'float32')


def measure_ceilings(spec: dict) -> list[dict]:
  """[the copy bandwidth, the matmul TFLOP/s per dtype]: medians of spec['repeats'] calls."""
  import jax  # Late: the parent process must not import JAX; the worker measuring it does.
  import jax.numpy as jnp  # Late: as jax.

  device = jax.devices()[0]
  kind = 'cpu' if device.platform == 'cpu' else 'gpu'
  context = {'device': f'{device.platform}: {device.device_kind}',
             'versions': {'jax': jax.__version__}}
  copy_bytes = (spec.get('copy_mib') or DEFAULT_COPY_MIB[kind]) * 2**20
  x = jnp.zeros((copy_bytes // 4,), jnp.float32)
  median_s, min_s = _time(jax.jit(lambda a: a + 1), (x,), spec['repeats'])
  moved = 2 * x.nbytes  # Read once, written once.
  records = [{'kind': 'copy_bandwidth', 'bytes_moved': moved, 'time_s': median_s,
              'gb_per_s': moved / median_s / 1e9, 'gb_per_s_max': moved / min_s / 1e9,
              'op': 'x + 1', **context}]
  del x
  size = spec.get('matmul_size') or DEFAULT_MATMUL_SIZE[kind]
  for dtype in MATMUL_DTYPES:
    keys = jax.random.split(jax.random.PRNGKey(0))
    a, b = (jax.random.normal(k, (size, size), dtype) for k in keys)
    median_s, min_s = _time(jax.jit(jnp.matmul), (a, b), spec['repeats'])
    flops = 2 * size ** 3
    records.append({'kind': 'matmul', 'dtype': dtype, 'size': size, 'flops': flops,
                    'time_s': median_s, 'tflops': flops / median_s / 1e12,
                    'tflops_max': flops / min_s / 1e12,
                    'precision': str(jax.config.jax_default_matmul_precision or 'default'),
                    **context})
  return records


def _time(fn: Callable, args: tuple, repeats: int) -> tuple[float, float]:
  """(median, min) seconds of `repeats` synchronised calls, after one that compiles."""
  fn(*args).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn(*args).block_until_ready()
    times.append(time.perf_counter() - start)
  return statistics.median(times), min(times)


def format_ceilings(records: list[dict]) -> str:
  lines = []
  for r in records:
    if 'error' in r:
      lines.append(f'ceilings FAILED: {r["error"]}')
    elif r['kind'] == 'copy_bandwidth':
      lines.append(f'copy bandwidth ({r["device"]}): {r["gb_per_s"]:.1f} GB/s median, '
                   f'{r["gb_per_s_max"]:.1f} best (a {r["bytes_moved"] / 2**21:.0f} MiB array '
                   f'read and written per call: {r["op"]})')
    else:
      lines.append(f'matmul {r["size"]}x{r["size"]} {r["dtype"]} ({r["device"]}, precision '
                   f'{r["precision"]}): {r["tflops"]:.2f} TFLOP/s median, '
                   f'{r["tflops_max"]:.2f} best')
  return '\n'.join(lines)
