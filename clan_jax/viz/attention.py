"""The model's side of the attention figures: the forward pass that returns its maps
(`attention_forward`, also behind `clan_jax.predict --figures`), and their figures for the
first eval images (`AttentionFigures`), drawn by clan_jax/viz/figures.py; written as PNGs
(--mode=visualize, and at the end of training with `visualize.after_training`) or as
TensorBoard images at each evaluation of a training run (docs/VISUALIZE.md)."""

import logging
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from clan_jax.base.files import write_png
from clan_jax.base.text import plural
from clan_jax.datasets import input_pipeline
from clan_jax.datasets.preprocess import normalize
from clan_jax.viz.figures import attention_figures, clca_row, query_cell, stage_stride


# ---------------------------------------------------------------------------- the model

def missing_attention_maps(model_config: Any) -> Optional[str]:
  """Why a model has no attention maps to show, or None if it has some."""
  if model_config.name != 'clan':
    return (f"model.name={model_config.name!r} has no attention maps (CLSA and CLCA are "
            "parts of CLAN); visualise a model.name='clan' model.")
  if not (model_config.use_clsa or model_config.use_clca):
    return ('model.use_clsa and model.use_clca are both False: this CLAN has no attention '
            'maps; visualise a model trained with at least one of them.')
  return None


def query_indices(mid_names: Sequence[str], image_size: Sequence[int],
                  query_position: Sequence[float]) -> dict[str, int]:
  """Each mid map's query (visualize.query_position) as a flat index into that map."""
  queries = {}
  for name in mid_names:
    mid_shape = [n // stage_stride(name) for n in image_size]
    row, col = query_cell(query_position, mid_shape)
    queries[name] = row * mid_shape[1] + col
  return queries


def attention_forward(model: Any, image_size: Sequence[int],
                      query_position: Sequence[float]) -> Callable[[Any, Any], dict]:
  """(variables, uint8 images) -> the figures' outputs: logits, CLSA maps and each mid map's
  CLCA row at the query (not the whole attention matrix), for jax.jit. The one forward pass
  behind --mode=visualize, training's figures and `clan_jax.predict --figures`."""
  queries = query_indices(model.mid_names, image_size, query_position)

  def forward(variables, images):
    outputs = model.apply(variables, normalize(images), train=False, return_attention=True)
    return {'logits': outputs['logits'], 'clsa': outputs.get('clsa', {}),
            'clca': {name: clca_row(attention, queries[name])
                     for name, attention in outputs.get('clca', {}).items()}}

  return forward


class AttentionFigures:
  """The first `visualize.num_images` eval images, and a jitted forward pass that returns
  their maps (replicated over the mesh: every process runs it; the main one draws)."""

  def __init__(self, run: Any):
    config = run.config
    examples = input_pipeline.eval_examples(run.eval_data, config.dataset,
                                            config.visualize.num_images)
    self.images, self.labels = examples['image'], examples['label']
    self.class_names, self.mid_names = run.class_names, run.model.mid_names
    self.query_position = tuple(config.visualize.query_position)
    self.clca_kind = config.model.clca_kind
    self.is_main_process = run.is_main_process
    forward = attention_forward(run.model, self.images.shape[1:3], self.query_position)
    replicated = NamedSharding(run.mesh, PartitionSpec())  # Every device holds the images.
    self._forward = jax.jit(forward, in_shardings=(replicated, replicated),
                            out_shardings=replicated)
    self._device_images = jax.make_array_from_process_local_data(replicated, self.images)

  def outputs(self, variables: Any) -> dict:
    """The model's logits, CLSA maps and CLCA rows for the images, as numpy."""
    return jax.tree.map(np.asarray, self._forward(variables, self._device_images))

  def figures(self, outputs: Mapping[str, Any]) -> list[np.ndarray]:
    return attention_figures(self.images, self.labels, outputs, self.class_names,
                             self.mid_names, self.query_position, self.clca_kind)

  def write_images(self, writer: Any, variables: Any, step: int) -> None:
    """TensorBoard images `attention/image_<i>` through a clu metric writer."""
    outputs = self.outputs(variables)
    if self.is_main_process:
      writer.write_images(step, {f'attention/image_{i}': figure
                                 for i, figure in enumerate(self.figures(outputs))})

  def write_pngs(self, outputs: Mapping[str, Any], directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, figure in enumerate(self.figures(outputs)):
      paths.append(os.path.join(directory, f'image_{i}.png'))
      write_png(figure, paths[-1])
    return paths


def training_figures(run: Any) -> Optional[AttentionFigures]:
  """The figures to write at each evaluation, or None (switched off, or no maps)."""
  if not run.config.visualize.every_eval:
    return None
  reason = missing_attention_maps(run.config.model)
  if reason:
    logging.info('no attention figures in TensorBoard: %s', reason)
    return None
  return AttentionFigures(run)


def write_final_figures(run: Any, variables: Any, step: int,
                        figures: Optional[AttentionFigures] = None) -> list[str]:
  """`visualize.after_training`: the trained model's figures as PNGs under
  workdir/visualizations/step_<step>/ (where --mode=visualize puts the same checkpoint's),
  with one line saying where; returns the paths ([] when off or the model has no maps).
  `figures`: the training's TensorBoard figures, reused (the same images, already compiled)."""
  if not run.config.visualize.after_training:
    return []
  reason = missing_attention_maps(run.config.model)
  if reason:
    logging.info('no attention figures after training: %s', reason)
    return []
  figures = figures or AttentionFigures(run)
  outputs = figures.outputs(variables)  # Every process: the forward pass is collective.
  if not run.is_main_process:
    return []
  directory = os.path.join(run.workdir, 'visualizations', f'step_{step}')
  paths = figures.write_pngs(outputs, directory)
  print(f'wrote {plural(len(paths), "attention figure")} of the trained model (step {step}) to '
        f'{directory}: image_0.png..image_{len(paths) - 1}.png', flush=True)
  return paths
