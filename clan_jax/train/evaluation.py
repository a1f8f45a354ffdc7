"""Exact evaluation: every example of a split counted once, per head and fused.

The jitted step returns per-example losses, top-1/top-5 hits and predictions; the host
keeps those of real examples (mask) and sums them in float64, so the result does not
depend on the batch size, the device count or the padding of the last batch.

`eval_results.json` (written by report_results):
    {"fused": {"top1", "top5", "loss"}, "heads": {name: {"top1", "top5", "loss"}},
     "per_class_top1": [...], "num_examples": n,
     "protocol": {"split", "checkpoint", "step", "crop", "image_size", "fusion", "dtype",
                  ["selected_on", "selection_split"], ["best_checkpoint"]}}
Accuracies are fractions in [0, 1]; per_class_top1 holds null for a class absent from
the split. No timings: throughput goes to the metrics. The protocol (docs/TRAINING.md):
    split, image_size   the split evaluated (dataset.eval_split); the crop's side
    checkpoint, step    'final' (a training run's end), 'latest' or 'best' (a run's
                        checkpoint), 'torch' or 'variables' (a file, step 0)
    crop                'center', or 'center+flip' (eval.flip: the logits of the crop and of
                        its mirror averaged, per head and fused)
    fusion              model.fusion ('none' for the plain ResNet)
    dtype               the compute dtype model.dtype resolved to ('auto': bfloat16 on a
                        GPU or TPU, float32 on a CPU)
    selected_on         checkpoint 'best' only: '<split> split top-1', and selection_split:
                        'validation' (dataset.val_split, apart from the eval split) or 'eval'
                        (the eval split itself, as the peers choose: optimistic), as the
                        training recorded them in the checkpoint's meta
    best_checkpoint     a training run's results only: {"selected_on", "selection_split"} of
                        the run's best checkpoint (the results are the evaluated checkpoint's)
"""

import os
from typing import Any, Iterable, Mapping, Optional

import jax
import numpy as np

from clan_jax.base.files import write_json
from clan_jax.base.text import plural
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
  """The jitted eval step (eval.flip: mirror averaged): variables replicated, batch and
  per-example outputs over 'data'."""
  data = sharding.data_sharding(run.mesh)
  flip = bool(run.config.eval.flip)
  return jax.jit(lambda variables, batch: steps.eval_step(run.model, variables, batch, flip),
                 in_shardings=(sharding.replicated_sharding(run.mesh), data), out_shardings=data)


def evaluate_split(run: Run, eval_fn, variables, data: input_pipeline.SplitData) -> dict:
  """The results of `variables` on one split's data (every example once), without protocol."""
  ds = input_pipeline.eval_dataset(data, run.config.dataset,
                                   global_batch_size=run.eval_batch_size,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  return evaluate_batches(
      lambda batch: eval_fn(variables, batch), ds.as_numpy_iterator(), run.num_classes,
      lambda batch: sharding.global_batch(batch, run.mesh), sharding.to_host)


def selection(split: str, is_validation: bool) -> dict:
  """How a best checkpoint is chosen: its 'selected_on' and 'selection_split' (protocol)."""
  return {'selected_on': f'{split} split top-1',
          'selection_split': 'validation' if is_validation else 'eval'}


def training_selection(run: Run) -> dict:
  """What this training run chooses its best checkpoint on: the validation split, if any."""
  if run.val_split:
    return selection(run.val_split, True)
  return selection(run.config.dataset.eval_split, False)


def checkpoint_selection(meta: dict, eval_split: str) -> dict:
  """What a run's checkpoint meta says its best was chosen on; runs from before the selection
  was recorded chose on the split of their 'eval' metrics (else `eval_split`)."""
  if meta.get('selection'):
    return dict(meta['selection'])
  return selection((meta.get('eval') or {}).get('split', eval_split), False)


def protocol(run: Run, checkpoint: str, step: int) -> dict:
  """eval_results.json's protocol, without the selection of a best checkpoint."""
  config = run.config
  return {'split': config.dataset.eval_split, 'checkpoint': checkpoint, 'step': int(step),
          'crop': 'center+flip' if config.eval.flip else 'center',
          'image_size': config.dataset.crop_size,
          'fusion': config.model.fusion if config.model.name == 'clan' else 'none',
          'dtype': run.dtype}


def run_evaluation(run: Run, eval_fn, variables, checkpoint: str, step: int,
                   selected: Optional[dict] = None) -> dict:
  """The eval split's results for `variables`, with their protocol; `checkpoint` says what
  they are ('final', 'latest', 'best', 'torch' or 'variables'). `selected` (selection()):
  for 'best', how it was chosen (default: on the eval split); in a training run ('final',
  'latest'), how the run chooses its best checkpoint (recorded as 'best_checkpoint')."""
  results = evaluate_split(run, eval_fn, variables, run.eval_data)
  results['protocol'] = protocol(run, checkpoint, step)
  if checkpoint == 'best':
    results['protocol'].update(selected or selection(run.config.dataset.eval_split, False))
  elif selected:
    results['protocol']['best_checkpoint'] = selected
  return results


def eval_scalars(results: dict, prefix: str = 'eval') -> dict:
  """TensorBoard's scalars of `results`: <prefix>_<metric>_<head> (prefix 'eval_val' for the
  validation split)."""
  scalars = {f'{prefix}_{k}_fused': v for k, v in results['fused'].items()}
  for head, values in results['heads'].items():
    scalars.update({f'{prefix}_{k}_{head}': v for k, v in values.items()})
  return scalars


def report_results(run: Run, results: dict) -> None:
  """Writes eval_results.json and tells the user the result and where the outputs are."""
  if run.is_main_process:
    path = os.path.join(run.workdir, 'eval_results.json')
    write_json(results, path)
    fused, proto = results['fused'], results['protocol']
    selected = f', chosen on the {proto["selected_on"]}' if 'selected_on' in proto else ''
    images = plural(results['num_examples'], 'image')
    print(f'{proto["split"]} top-1 (fused: {proto["fusion"]}): {fused["top1"]:.4f}, top-5 '
          f'{fused["top5"]:.4f}, loss {fused["loss"]:.4f} on {images} '
          f'(checkpoint {proto["checkpoint"]}, step {proto["step"]}{selected}; {proto["crop"]} '
          f'crop, {proto["dtype"]})', flush=True)
    print(f'outputs in {run.workdir}: eval_results.json, config.json, classes.json, '
          'checkpoints/, TensorBoard events, metrics.jsonl', flush=True)
