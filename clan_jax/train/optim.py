"""The optimiser of the recipe (docs/MODEL.md): SGD with momentum and weight decay, two learning
rates (the pretrained backbone and the new layers), per-step linear warm-up then cosine.

optax's `add_decayed_weights` + `sgd(momentum)` is torch.optim.SGD exactly: the decay is
added to the gradient before the momentum trace, as torch does (no dampening, no Nesterov).
`optimizer.name='adamw'` (decoupled decay, as torch.optim.AdamW) is for training from
scratch, where SGD's plateau is long (the demo).
"""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

BACKBONE, NEW = 'backbone', 'new'


def scaled_learning_rate(base: float, batch_size: int, base_batch_size: int) -> float:
  """Linear scaling: the recipe's rates are for `base_batch_size` (16)."""
  return base * batch_size / base_batch_size


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int) -> Callable[[Any], Any]:
  """Per-step learning rate: linear from 0 over warmup_steps, then cosine to 0 at total_steps.

  lr(s) = peak * s / W for s < W; peak * (1 + cos(pi * (s - W) / (T - W))) / 2 after.
  """
  warmup_steps = min(warmup_steps, total_steps)

  def schedule(step):
    step = jnp.asarray(step, jnp.result_type(float))  # float64 under jax.enable_x64.
    warm = peak * step / max(warmup_steps, 1)
    progress = jnp.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
    cosine = peak * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    return jnp.where(step < warmup_steps, warm, cosine)

  return schedule


def parameter_groups(params: Any, num_classes: int) -> Any:
  """'backbone' for the pretrained ResNet (and `fc` when it keeps ImageNet's 1000 classes),
  'new' for everything CLAN adds (CLCA, CLSA, heads) and a re-initialised `fc`."""

  def label(path: tuple[str, ...], _) -> str:
    if path[0] == 'backbone' or (path[0] == 'fc' and num_classes == 1000):
      return BACKBONE
    return NEW

  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({path: label(path, v) for path, v in flat.items()})


def decay_mask(params: Any, decay_norm_and_bias: bool) -> Any:
  """Which parameters weight decay applies to; all (torch's default) unless excluded."""
  if decay_norm_and_bias:
    return jax.tree.map(lambda _: True, params)
  return jax.tree.map(lambda p: p.ndim > 1, params)  # BN/LayerNorm scales and biases are 1-D.


def create_optimizer(optimizer_config: Any, params: Any, *, num_classes: int, batch_size: int,
                     total_steps: int, warmup_steps: int) -> tuple[optax.GradientTransformation,
                                                                   dict[str, Callable]]:
  """The optax transformation and the learning-rate schedule of each group."""
  c = optimizer_config
  schedules = {
      NEW: warmup_cosine(scaled_learning_rate(c.learning_rate, batch_size, c.base_batch_size),
                         warmup_steps, total_steps),
      BACKBONE: warmup_cosine(
          scaled_learning_rate(c.backbone_learning_rate, batch_size, c.base_batch_size),
          warmup_steps, total_steps),
  }
  mask = lambda p: decay_mask(p, c.decay_norm_and_bias)
  if c.name == 'sgd':
    make = lambda schedule: optax.chain(optax.add_decayed_weights(c.weight_decay, mask=mask),
                                        optax.sgd(schedule, momentum=c.momentum or None))
  elif c.name == 'adamw':
    make = lambda schedule: optax.adamw(schedule, weight_decay=c.weight_decay, mask=mask)
  else:
    raise ValueError(f'optimizer.name={c.name!r}; allowed: sgd, adamw.')
  groups = {name: make(schedule) for name, schedule in schedules.items()}
  transform = optax.multi_transform(groups, parameter_groups(params, num_classes))
  if c.grad_clip_norm:
    transform = optax.chain(optax.clip_by_global_norm(c.grad_clip_norm), transform)
  return transform, schedules
