"""The steps as pure functions: the train step (the loss over CLAN's heads, the gradient, the
update) and the eval step (per-example losses and hits of every head).

Imports only jax, flax and optax (no TensorFlow, clu or ml_collections), so that
clan_jax.benchmark times exactly this step on a bare GPU image; clan_jax.train.loop wraps it
with clu metrics, shardings and donation.
"""

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

from clan_jax.datasets.preprocess import normalize
from clan_jax.models import cross_entropy, multi_head_loss
from clan_jax.train import optim

FUSED = 'fused'  # The prediction (model.fusion) among the heads of eval_step's outputs.


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}


def create_train_state(params: Any, batch_stats: Any,
                       tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params))


def train_step(model, tx: optax.GradientTransformation, schedules: Mapping[str, Callable],
               head_loss_weights: Mapping[str, float], label_smoothing: float,
               state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict]:
  """One step on a batch of uint8 images; returns the new state and the step's scalars
  (loss, accuracy_fused, learning rates, and per head loss_<head> and accuracy_<head>)."""
  images = normalize(batch['image'])
  labels = batch['label']

  def loss_fn(params):
    outputs, updates = model.apply({'params': params, 'batch_stats': state.batch_stats}, images,
                                   train=True, mutable=['batch_stats'])
    loss, per_head = multi_head_loss(outputs, labels, head_loss_weights, label_smoothing)
    return loss, (outputs, per_head, updates['batch_stats'])

  (loss, (outputs, per_head, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = jax.tree.map(lambda p, u: p + u, state.params, updates)
  scalars = {'loss': loss,
             'accuracy_fused': jnp.mean(jnp.argmax(outputs['logits'], -1) == labels),
             'learning_rate': schedules[optim.NEW](state.step),
             'learning_rate_backbone': schedules[optim.BACKBONE](state.step)}
  for head, logits in outputs.get('heads', {}).items():
    scalars[f'loss_{head}'] = per_head[head]
    scalars[f'accuracy_{head}'] = jnp.mean(jnp.argmax(logits, -1) == labels)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, scalars


def eval_step(model, variables: Mapping[str, Any], batch: Mapping[str, jax.Array],
              flip: bool = False) -> dict:
  """Per-example 'loss/<head>', 'top1/<head>', 'top5/<head>' ('fused' and each head), 'pred',
  and the batch's 'label' and 'mask', so that the host reads one consistent global batch.

  With `flip`, each head's logits (the fused ones included) are the mean of those of the image
  and of its horizontal mirror, taken before the loss and the top-k."""
  logits_by_head = _logits_by_head(model, variables, batch['image'])
  if flip:
    mirrored = _logits_by_head(model, variables, batch['image'][:, :, ::-1])  # NHWC: W.
    logits_by_head = {head: (logits + mirrored[head]) / 2
                      for head, logits in logits_by_head.items()}
  labels = batch['label']
  result = {'pred': jnp.argmax(logits_by_head[FUSED], axis=-1), 'label': labels,
            'mask': batch['mask']}
  for head, logits in logits_by_head.items():
    k = min(5, logits.shape[-1])
    top_k = jax.lax.top_k(logits, k)[1]
    result[f'loss/{head}'] = jax.vmap(lambda l, y: cross_entropy(l[None], y[None]))(logits, labels)
    result[f'top1/{head}'] = top_k[:, 0] == labels
    result[f'top5/{head}'] = jnp.any(top_k == labels[:, None], axis=-1)
  return result


def _logits_by_head(model, variables: Mapping[str, Any], images: jax.Array) -> dict:
  """{'fused': the prediction's logits, <head>: each head's}, in float32, of uint8 images."""
  outputs = model.apply(variables, normalize(images), train=False)
  logits = {FUSED: outputs['logits'], **outputs.get('heads', {})}
  return {head: value.astype(jnp.float32) for head, value in logits.items()}
