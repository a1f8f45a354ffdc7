"""Parity of the Flax model with the PyTorch twin on the same weights: every output compared
relative to its scale (the command: clan_jax/parity.py; docs/PARITY.md)."""

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from clan_jax.models.fields import ModelConfig, check_image_size
from clan_jax.datasets.preprocess import load_and_preprocess
from clan_jax.models import create_model
from clan_jax.pytorch.conversion import tensor_to_numpy, torch_to_flax

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
  # Jitted: op-by-op dispatch of a whole network is several times slower.
  outputs = dict(jax.jit(functools.partial(model.apply, train=False, return_attention=True))(
      variables, images))
  outputs['features'] = jax.jit(functools.partial(model.apply, train=False, method='features'))(
      variables, images)
  return {k: np.asarray(v) for k, v in flatten(outputs).items()}


def twin_outputs(twin, images: np.ndarray) -> dict[str, np.ndarray]:
  """The twin's outputs in the Flax layout (spatial maps NHWC)."""
  import torch  # Late: torch is an optional extra.

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
  check_image_size(image_size, '--image_size')
  if paths:
    return np.stack([load_and_preprocess(p, resize_size, image_size) for p in paths])
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch_size, image_size, image_size, 3)).astype(np.float32)


def run_parity(arrays: Mapping[str, np.ndarray], model_config: Any, num_classes: int,
               images: np.ndarray) -> list[Difference]:
  """Converts `arrays` for both frameworks, runs both and compares every output."""
  from clan_jax.pytorch.twin import create_torch_model, load_arrays  # Late: imports torch.

  fields = ModelConfig.from_section(model_config)
  if fields.dtype == 'auto':  # The twin computes in float32: compare like with like.
    fields = dataclasses.replace(fields, dtype='float32')
  model = create_model(fields, num_classes)
  variables = torch_to_flax(arrays, model, image_size=images.shape[1])
  twin = load_arrays(create_torch_model(model_config, num_classes), arrays)
  return compare(twin_outputs(twin, images), flax_outputs(model, variables, images))
