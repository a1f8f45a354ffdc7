"""Exact evaluation: every example of a split counted once, per head and fused.

The jitted step returns per-example losses, top-1/top-5 hits and predictions; the host
keeps those of real examples (mask) and sums them in float64, so the result does not
depend on the batch size, the device count or the padding of the last batch.

`eval_results.json` (written by clan_jax.train.loop):
    {"fused": {"top1", "top5", "loss"}, "heads": {name: {"top1", "top5", "loss"}},
     "per_class_top1": [...], "num_examples": n,
     "protocol": {"split", "crop": "center", "image_size", "fusion", "checkpoint", "step"}}
Accuracies are fractions in [0, 1]; per_class_top1 holds null for a class absent from
the split. No timings: throughput goes to the metrics.
"""

import json
import os
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from clan_jax.models.loss import cross_entropy
from clan_jax.datasets.preprocess import normalize

FUSED = 'fused'


def eval_step(model, variables: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
  """Per-example 'loss/<head>', 'top1/<head>', 'top5/<head>' ('fused' and each head), 'pred',
  and the batch's 'label' and 'mask', so that the host reads one consistent global batch."""
  outputs = model.apply(variables, normalize(batch['image']), train=False)
  labels = batch['label']
  logits_by_head = {FUSED: outputs['logits'], **outputs.get('heads', {})}
  result = {'pred': jnp.argmax(outputs['logits'], axis=-1), 'label': labels,
            'mask': batch['mask']}
  for head, logits in logits_by_head.items():
    logits = logits.astype(jnp.float32)
    k = min(5, logits.shape[-1])
    top_k = jax.lax.top_k(logits, k)[1]
    result[f'loss/{head}'] = jax.vmap(lambda l, y: cross_entropy(l[None], y[None]))(logits, labels)
    result[f'top1/{head}'] = top_k[:, 0] == labels
    result[f'top5/{head}'] = jnp.any(top_k == labels[:, None], axis=-1)
  return result


class EvalAccumulator:
  """Sums per-example results of real (unmasked) examples on the host, in float64."""

  def __init__(self, num_classes: int):
    self.num_classes = num_classes
    self.sums: dict[str, float] = {}
    self.count = 0
    self.class_hits = np.zeros(num_classes, np.int64)
    self.class_counts = np.zeros(num_classes, np.int64)

  def add(self, outputs: Mapping[str, np.ndarray]) -> None:
    mask = np.asarray(outputs['mask'], bool)
    labels = np.asarray(outputs['label'])[mask]
    for name, values in outputs.items():
      if '/' in name:
        self.sums[name] = self.sums.get(name, 0.0) + float(
            np.asarray(values, np.float64)[mask].sum())
    hits = np.asarray(outputs['pred'])[mask] == labels
    np.add.at(self.class_counts, labels, 1)
    np.add.at(self.class_hits, labels, hits.astype(np.int64))
    self.count += int(mask.sum())

  def results(self) -> dict:
    if not self.count:
      raise ValueError('no example was evaluated.')
    heads = sorted({name.split('/', 1)[1] for name in self.sums})
    summary = {head: {metric: self.sums[f'{metric}/{head}'] / self.count
                      for metric in ('top1', 'top5', 'loss')} for head in heads}
    per_class = [None if n == 0 else float(h / n)
                 for h, n in zip(self.class_hits, self.class_counts)]
    return {'fused': summary.pop(FUSED), 'heads': summary, 'per_class_top1': per_class,
            'num_examples': self.count}


def evaluate_batches(step_fn, batches: Iterable[Mapping[str, Any]], num_classes: int,
                     to_global, to_host) -> dict:
  """Runs `step_fn` over every batch and returns the summary (without the protocol)."""
  accumulator = EvalAccumulator(num_classes)
  for batch in batches:
    outputs = step_fn(to_global({k: batch[k] for k in ('image', 'label', 'mask')}))
    accumulator.add({k: to_host(v) for k, v in outputs.items()})
  return accumulator.results()


def write_json(content: Mapping[str, Any], path: str) -> None:
  """Writes a JSON file (eval_results.json, config.json, ...) atomically: a temporary file
  renamed into place, so a killed run never leaves a truncated file."""
  temporary = f'{path}.tmp'
  with open(temporary, 'w') as f:
    json.dump(content, f, indent=2)
    f.write('\n')
  os.replace(temporary, path)
