"""Exact evaluation: every example of a split counted once, per head and fused.

The jitted step returns per-example losses, top-1/top-5 hits and predictions; the host
keeps those of real examples (mask) and sums them in float64, so the result does not
depend on the batch size, the device count or the padding of the last batch.

`eval_results.json` (written by report_results):
    {"fused": {"top1", "top5", "loss"}, "heads": {name: {"top1", "top5", "loss"}},
     "per_class_top1": [...], "num_examples": n,
     "protocol": {"split", "crop": "center", "image_size", "fusion", "checkpoint", "step"}}
Accuracies are fractions in [0, 1]; per_class_top1 holds null for a class absent from
the split. No timings: throughput goes to the metrics.
"""

import os
from typing import Any, Iterable, Mapping

import jax
import numpy as np

from clan_jax.base.files import write_json
from clan_jax.datasets import input_pipeline
from clan_jax.train import sharding, steps
from clan_jax.train.setup import Run
from clan_jax.train.steps import FUSED


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


def compile_eval_step(run: Run):
  """The jitted eval step: variables replicated, batch and per-example outputs over 'data'."""
  data = sharding.data_sharding(run.mesh)
  return jax.jit(lambda variables, batch: steps.eval_step(run.model, variables, batch),
                 in_shardings=(sharding.replicated_sharding(run.mesh), data), out_shardings=data)


def run_evaluation(run: Run, eval_fn, variables, checkpoint: str, step: int) -> dict:
  """The eval split's results for `variables`, with their protocol; `checkpoint` says what
  they are ('final', 'latest', 'best', 'torch' or 'variables')."""
  ds = input_pipeline.eval_dataset(run.eval_data, run.config.dataset,
                                   global_batch_size=run.eval_batch_size,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  results = evaluate_batches(
      lambda batch: eval_fn(variables, batch), ds.as_numpy_iterator(), run.num_classes,
      lambda batch: sharding.global_batch(batch, run.mesh), sharding.to_host)
  results['protocol'] = {
      'split': run.config.dataset.eval_split, 'crop': 'center',
      'image_size': run.config.dataset.crop_size,
      'fusion': run.config.model.fusion if run.config.model.name == 'clan' else 'none',
      'checkpoint': checkpoint, 'step': int(step)}
  if checkpoint == 'best':
    results['protocol']['selected_on'] = f'{run.config.dataset.eval_split} split top-1'
  return results


def eval_scalars(results: dict) -> dict:
  scalars = {f'eval_{k}_fused': v for k, v in results['fused'].items()}
  for head, values in results['heads'].items():
    scalars.update({f'eval_{k}_{head}': v for k, v in values.items()})
  return scalars


def report_results(run: Run, results: dict) -> None:
  """Writes eval_results.json and tells the user the result and where the outputs are."""
  if run.is_main_process:
    path = os.path.join(run.workdir, 'eval_results.json')
    write_json(results, path)
    fused = results['fused']
    print(f'{results["protocol"]["split"]} top-1 (fused: {results["protocol"]["fusion"]}): '
          f'{fused["top1"]:.4f}, top-5 {fused["top5"]:.4f}, loss {fused["loss"]:.4f} on '
          f'{results["num_examples"]} images (checkpoint {results["protocol"]["checkpoint"]}, '
          f'step {results["protocol"]["step"]})', flush=True)
    print(f'outputs in {run.workdir}: eval_results.json, config.json, classes.json, '
          'checkpoints/, TensorBoard events', flush=True)
