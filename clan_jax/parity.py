r"""Checks that the Flax model reproduces the PyTorch twin on the same PyTorch weights.

    python -m clan_jax.parity --torch_checkpoint=resnet50.pth --config=configs/default.py \
        --config.model.name=resnet --config.model.depth=50 [IMAGE ...]

Both models run in eval mode on the images (eval preprocessing of clan_jax.datasets.preprocess)
or, without images, on seeded random inputs. For each output (fused logits, every
stage's features, and CLAN's heads and maps) it prints max|ref| (the scale, from the
twin), max|diff| and their ratio, and exits with status 1 if a ratio exceeds --tolerance.
In float32 the two frameworks agree to about 1e-6 of each output's scale
(docs/PARITY.md); --tolerance defaults to 1e-4, which leaves margin for larger inputs.
"""

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from absl import flags, logging

from clan_jax.base import cli
from clan_jax.convert import infer_num_classes, load_torch_checkpoint, torch_to_flax
from clan_jax.base.errors import UserError

# Output groups that hold spatial maps: NCHW in torch, NHWC in Flax.
SPATIAL_GROUPS = ('features', 'clsa')


@dataclasses.dataclass(frozen=True)
class Difference:
  name: str
  shape: tuple[int, ...]
  scale: float  # max |reference|
  max_abs_diff: float

  @property
  def relative(self) -> float:
    return self.max_abs_diff / self.scale if self.scale > 0 else self.max_abs_diff


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(flatten(value, name + '/'))
    else:
      flat[name] = value
  return flat


def flax_outputs(model, variables, images: np.ndarray) -> dict[str, np.ndarray]:
  """apply() outputs (attention maps included) plus the stage features under 'features/'."""
  outputs = dict(model.apply(variables, images, train=False, return_attention=True))
  outputs['features'] = model.apply(variables, images, train=False, method='features')
  return {k: np.asarray(v) for k, v in flatten(outputs).items()}


def twin_outputs(twin, images: np.ndarray) -> dict[str, np.ndarray]:
  """The twin's outputs in the Flax layout (spatial maps NHWC)."""
  import torch

  from clan_jax.convert import tensor_to_numpy

  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  twin.eval()
  with torch.no_grad():
    outputs = dict(twin(x, return_attention=True))
    outputs['features'] = twin.features(x)
  flat = {k: tensor_to_numpy(v) for k, v in flatten(outputs).items()}
  return {k: v.transpose(0, 2, 3, 1) if k.split('/')[0] in SPATIAL_GROUPS and v.ndim == 4
          else v for k, v in flat.items()}


def compare(reference: Mapping[str, np.ndarray],
            candidate: Mapping[str, np.ndarray]) -> list[Difference]:
  """One Difference per output; the outputs' names and shapes must agree."""
  if set(reference) != set(candidate):
    raise ValueError(f'outputs differ: only in reference {sorted(set(reference) - set(candidate))}'
                     f', only in candidate {sorted(set(candidate) - set(reference))}.')
  differences = []
  for name in sorted(reference):
    ref = np.asarray(reference[name], np.float64)
    new = np.asarray(candidate[name], np.float64)
    if ref.shape != new.shape:
      raise ValueError(f'{name}: shape {new.shape}, expected {ref.shape}.')
    differences.append(Difference(name, ref.shape, float(np.max(np.abs(ref))),
                                  float(np.max(np.abs(ref - new)))))
  return differences


def format_table(differences: Sequence[Difference], tolerance: float) -> str:
  lines = [f'{"output":<22} {"shape":<22} {"max|ref|":>10} {"max|diff|":>10} '
           f'{"relative":>10}  ok']
  for d in differences:
    lines.append(f'{d.name:<22} {str(d.shape):<22} {d.scale:>10.4g} {d.max_abs_diff:>10.3g} '
                 f'{d.relative:>10.3g}  {"yes" if d.relative <= tolerance else "NO"}')
  return '\n'.join(lines)


def parity_inputs(paths: Sequence[str], image_size: int, resize_size: int, batch_size: int,
                  seed: int) -> np.ndarray:
  from clan_jax.config.validation import check_image_size
  from clan_jax.datasets.preprocess import load_and_preprocess

  check_image_size(image_size, '--image_size')
  if paths:
    return np.stack([load_and_preprocess(p, resize_size, image_size) for p in paths])
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch_size, image_size, image_size, 3)).astype(np.float32)


def run_parity(arrays: Mapping[str, np.ndarray], model_config: Any, num_classes: int,
               images: np.ndarray) -> list[Difference]:
  """Converts `arrays` for both frameworks, runs both and compares every output."""
  from clan_jax.models import create_model
  from clan_jax.pytorch.twin import create_torch_model, load_arrays

  model = create_model(model_config, num_classes)
  variables = torch_to_flax(arrays, model, image_size=images.shape[1])
  twin = load_arrays(create_torch_model(model_config, num_classes), arrays)
  return compare(twin_outputs(twin, images), flax_outputs(model, variables, images))


def _define_flags() -> None:
  from ml_collections import config_flags

  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py) naming the model.')
  flags.DEFINE_string('torch_checkpoint', None, 'PyTorch checkpoint (.pth, .pt or .safetensors).')
  flags.DEFINE_integer('num_classes', 0, "Classes K; 0: the checkpoint's fc rows.",
                       lower_bound=0)
  flags.DEFINE_integer('image_size', 224, 'Input size (crop); a multiple of 32.', lower_bound=32)
  flags.DEFINE_integer('resize_size', 256, 'Images are resized to this, then centre-cropped.',
                       lower_bound=32)
  flags.DEFINE_integer('batch_size', 2, 'Random inputs when no image is given.', lower_bound=1)
  flags.DEFINE_integer('seed', 0, 'Seed of the random inputs.')
  flags.DEFINE_float('tolerance', 1e-4, 'Largest max|diff| / max|ref| accepted per output.',
                     lower_bound=0.0)
  flags.DEFINE_list('allow_global', [], 'Python globals to allow in the .pth file, if you trust it.')


def main(argv: list[str]) -> int:
  flags_ = flags.FLAGS
  config = cli.load_config_flag(flags_.config)
  if not flags_.torch_checkpoint:
    raise UserError('--torch_checkpoint is required.')
  if flags_.image_size % 32 or flags_.resize_size < flags_.image_size:
    raise UserError(f'--image_size={flags_.image_size} must be a multiple of 32 and at most '
                    f'--resize_size={flags_.resize_size} (images are resized, then cropped).')
  arrays = load_torch_checkpoint(flags_.torch_checkpoint, flags_.allow_global)
  num_classes = infer_num_classes(arrays, flags_.num_classes)
  images = parity_inputs(argv[1:], flags_.image_size, flags_.resize_size, flags_.batch_size,
                         flags_.seed)
  logging.info('comparing on %d inputs of %dx%d, jax %s on %s', len(images), images.shape[1],
               images.shape[2], jax.__version__, jax.devices()[0].platform)
  differences = run_parity(arrays, config.model, num_classes, images)
  print(format_table(differences, flags_.tolerance))
  worst = max(differences, key=lambda d: d.relative)
  if worst.relative > flags_.tolerance:
    print(f'FAILED: {worst.name} differs by {worst.relative:.3g} of its scale '
          f'(tolerance {flags_.tolerance:g}).')
    return 1
  print(f'OK: every output within {flags_.tolerance:g} of its scale '
        f'(worst: {worst.name}, {worst.relative:.3g}).')
  return 0


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
