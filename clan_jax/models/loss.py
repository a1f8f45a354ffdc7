"""The training loss: weighted cross-entropy over CLAN's heads (or the plain logits)."""

from typing import Any, Mapping

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Mean cross-entropy over the batch, in float32 at least.

  With label smoothing the target is (1 - eps) one_hot + eps / K, as in
  torch.nn.functional.cross_entropy(label_smoothing=eps).
  """
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes, dtype=log_probs.dtype)
  if label_smoothing:
    targets = targets * (1 - label_smoothing) + label_smoothing / num_classes
  return -jnp.mean(jnp.sum(targets * log_probs, axis=-1))


def head_weight(head: str, head_loss_weights: Mapping[str, float]) -> float:
  """'top' and 'concat' have their own weight; every mid-level head ('layerN') takes 'mid'."""
  return head_loss_weights[head] if head in ('top', 'concat') else head_loss_weights['mid']


def multi_head_loss(outputs: Mapping[str, Any], labels: jax.Array,
                    head_loss_weights: Mapping[str, float],
                    label_smoothing: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """sum over heads of w_head * CE(head); returns (total, {head: CE}).

  For the plain ResNet (outputs without 'heads') it is the cross-entropy of the logits,
  reported under 'logits'.
  """
  if 'heads' not in outputs:
    loss = cross_entropy(outputs['logits'], labels, label_smoothing)
    return loss, {'logits': loss}
  per_head = {head: cross_entropy(logits, labels, label_smoothing)
              for head, logits in outputs['heads'].items()}
  total = sum(head_weight(head, head_loss_weights) * loss for head, loss in per_head.items())
  return total, per_head
