"""Correct before fast: on the benchmark's device, CLAN's logits against a float64 reference.

    python scripts/gpu_parity_check.py [--depth=50 --image_size=224 --batch_size=4]

The twin with seeded weights runs in train mode for one step on the CPU in float64 (so the
BatchNorm statistics are not the identity), then in eval mode: that is the reference. The
same weights go into the Flax model, which runs on the default JAX device in float32 and
bfloat16, and into the twin on the GPU (float32, and autocast bf16) when there is one.
Prints ||out - ref|| / ||ref|| of the fused logits for each; float32 on a GPU lands near
1e-3 (TF32 convolutions are JAX's and cuDNN's default), bfloat16 near 1e-2.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, '.')
from clan_jax.convert import torch_to_flax  # noqa: E402
from clan_jax.datasets.preprocess import normalize  # noqa: E402
from clan_jax.models import create_model  # noqa: E402
from clan_jax.perf import step_benchmark  # noqa: E402
from clan_jax.pytorch.twin import create_torch_model  # noqa: E402


def relative(out, ref) -> float:
  out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
  return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--depth', type=int, default=50)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--batch_size', type=int, default=4)
  args = parser.parse_args()
  spec = {'model': 'clan', 'depth': args.depth, 'dtype': 'float32'}
  torch.manual_seed(0)
  twin = create_torch_model(step_benchmark.model_config(spec), 200).double()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch_size, args.image_size, args.image_size, 3), np.uint8)
  inputs = torch.from_numpy(normalize(images)).permute(0, 3, 1, 2).contiguous()
  twin.train()
  twin(inputs.double())  # One train-mode pass: running statistics away from (0, 1).
  twin.eval()
  with torch.no_grad():
    reference = twin(inputs.double())['logits'].numpy()
  arrays = {k: v.float().numpy() for k, v in twin.state_dict().items()}
  print(f'device: {jax.devices()[0]}; reference: the twin in float64 on the CPU; '
        f'max |logit| {np.abs(reference).max():.3g}')
  for dtype in ('float32', 'bfloat16'):
    model = create_model(step_benchmark.model_config({**spec, 'dtype': dtype}), 200)
    variables = torch_to_flax(arrays, model, image_size=args.image_size)
    logits = jax.jit(lambda v, x: model.apply(v, normalize(x), train=False)['logits'])(
        variables, jnp.asarray(images))
    print(f'jax {dtype:9}: relative error {relative(logits, reference):.2e}')
  if torch.cuda.is_available():
    net = twin.float().cuda().to(memory_format=torch.channels_last)
    x = inputs.cuda().contiguous(memory_format=torch.channels_last)
    for autocast in (False, True):
      with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16, enabled=autocast):
        logits = net(x)['logits'].float().cpu().numpy()
      print(f'torch {"amp_bf16" if autocast else "float32":7}: relative error '
            f'{relative(logits, reference):.2e}')


if __name__ == '__main__':
  main()
