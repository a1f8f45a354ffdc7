"""A model that predicts the classes of image files (the command: clan_jax/predict.py): eval
preprocessing, a batched jitted forward pass, top-k records and, on request, each image's
attention figure (clan_jax/viz); the model, its config and class names from a training workdir
or a file."""

import dataclasses
import json
import logging
import os
from typing import Any, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from clan_jax import datasets
from clan_jax.base.errors import ConfigError, UserError
from clan_jax.base.files import write_png
from clan_jax.base.workdirs import RUN_CONFIG, read_run_config, require_workdir
from clan_jax.models.fields import check_image_size
from clan_jax.datasets.preprocess import eval_transform, normalize, read_image_file
from clan_jax.inference.model_source import is_torch_file, load_inference_variables
from clan_jax.models import create_model
from clan_jax.pytorch.conversion import infer_num_classes, load_torch_checkpoint
from clan_jax.viz.attention import attention_forward, missing_attention_maps
from clan_jax.viz.figures import attention_figures

TOP_K = 5
FIGURE_SUFFIX = '_attention.png'  # DIR/bird1_attention.png for bird1.jpg.


@dataclasses.dataclass
class Predictor:
  """A model with its variables, class names and eval preprocessing sizes."""
  model: Any
  variables: Any
  class_names: list[str]
  resize_size: int
  crop_size: int
  source: str  # What the weights are, for the log.
  model_config: Any  # The config's model section (the figures need CLSA or CLCA).
  query_position: tuple[float, float] = (0.5, 0.5)  # visualize.query_position.

  def __post_init__(self):
    def probabilities(variables, images):
      # uint8 in, normalised on the device as in steps.eval_step.
      logits = self.model.apply(variables, normalize(images), train=False)['logits']
      return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    self._probabilities = jax.jit(probabilities)
    self._figure_outputs = None  # Compiled on first use: only --figures needs the maps.

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """uint8 (B, crop, crop, 3) -> float32 (B, K) class probabilities."""
    return np.asarray(self._probabilities(self.variables, images))

  def check_figures(self) -> None:
    """UserError unless the model has attention maps to draw."""
    reason = missing_attention_maps(self.model_config)
    if reason:
      raise UserError(f'--figures: {reason}')

  def figure_outputs(self, images: np.ndarray) -> dict:
    """uint8 images -> their probabilities and the maps the figures draw, as numpy."""
    if self._figure_outputs is None:
      forward = attention_forward(self.model, images.shape[1:3], self.query_position)

      def outputs(variables, batch):
        result = forward(variables, batch)
        result['probabilities'] = jax.nn.softmax(
            result['logits'].astype(jnp.float32), axis=-1)
        return result

      self._figure_outputs = jax.jit(outputs)
    return jax.tree.map(np.asarray, self._figure_outputs(self.variables, images))

  def load_image(self, path: str) -> np.ndarray:
    """An image file -> uint8 (crop, crop, 3); UserError if it is missing or unreadable."""
    try:
      return eval_transform(read_image_file(path), self.resize_size, self.crop_size)
    except PermissionError:
      raise UserError(f'{path}: permission denied.') from None

  def predict_files(self, paths: Sequence[str], batch_size: int,
                    figures_dir: Optional[str] = None) -> Iterator[dict]:
    """One record per path, in order: {'image', 'top5'} or {'image', 'error'}; with
    `figures_dir`, each predicted image's attention figure is written there and its record
    gets {'figure': path}."""
    if figures_dir is not None:
      self.check_figures()
      destinations = figure_paths(paths, figures_dir)
      make_figures_dir(figures_dir)
    # Every batch has the same size (the last one padded), so the forward compiles once.
    size = max(1, min(batch_size, len(paths)))
    for start in range(0, len(paths), size):
      chunk = paths[start:start + size]
      images, errors = {}, {}
      for i, path in enumerate(chunk):
        try:
          images[i] = self.load_image(path)
        except UserError as e:
          errors[i] = str(e)
      probabilities, figures = {}, {}
      if images:
        batch = np.zeros((size, self.crop_size, self.crop_size, 3), np.uint8)
        for row, i in enumerate(images):
          batch[row] = images[i]
        if figures_dir is None:
          outputs = self.probabilities(batch)
        else:
          figures = {i: destinations[start + i] for i in images}
          outputs = self._write_figures(batch, [chunk[i] for i in images],
                                        list(figures.values()))
        probabilities = {i: outputs[row] for row, i in enumerate(images)}
      for i, path in enumerate(chunk):
        if i in errors:
          yield {'image': path, 'error': errors[i]}
        else:
          record = {'image': path, 'top5': top_k(probabilities[i], self.class_names)}
          yield {**record, 'figure': figures[i]} if i in figures else record

  def _write_figures(self, batch: np.ndarray, paths: Sequence[str],
                     destinations: Sequence[str]) -> np.ndarray:
    """Draws the figures of the first len(paths) rows of the batch; returns the batch's
    probabilities."""
    outputs = self.figure_outputs(batch)
    count = len(paths)
    drawn = attention_figures(
        batch[:count], [folder_label(path, self.class_names) for path in paths],
        jax.tree.map(lambda array: array[:count], outputs), self.class_names,
        self.model.mid_names, self.query_position, self.model_config.clca_kind,
        names=[os.path.basename(path) for path in paths])
    for figure, destination in zip(drawn, destinations):
      write_png(figure, destination)
    return outputs['probabilities']


def figure_paths(paths: Sequence[str], directory: str) -> list[str]:
  """Each image's figure in `directory`: its name without the extension, then FIGURE_SUFFIX;
  repeated names (a/x.jpg, b/x.jpg, x.png) numbered in order: x_attention.png,
  x_2_attention.png, ...; never one of the images given (a figure never replaces an input)."""
  taken = {os.path.realpath(path) for path in paths}
  figures = []
  for path in paths:
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or 'image'
    figure, count = os.path.join(directory, stem + FIGURE_SUFFIX), 1
    while os.path.realpath(figure) in taken:
      count += 1
      figure = os.path.join(directory, f'{stem}_{count}{FIGURE_SUFFIX}')
    taken.add(os.path.realpath(figure))
    figures.append(figure)
  return figures


def folder_label(path: str, class_names: Sequence[str]) -> Optional[int]:
  """The true class of an image in a folder named after a class, as in a folder dataset
  (root/<split>/<class>/x.jpg), else None (unknown)."""
  folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
  return class_names.index(folder) if folder in class_names else None


def make_figures_dir(directory: str) -> None:
  try:
    os.makedirs(directory, exist_ok=True)
  except FileExistsError:
    raise UserError(f'--figures={directory} is a file; give a folder for the figures.') from None
  except OSError as e:
    raise UserError(f'--figures={directory}: cannot create the folder ({e.strerror}).') from None


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int = TOP_K) -> list[dict]:
  """The k most probable classes (fewer if there are fewer), ties in label order."""
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [{'label': int(i), 'name': class_names[i], 'prob': float(probabilities[i])}
          for i in order]


def format_record(record: dict) -> str:
  """The human-readable lines of one record."""
  if 'error' in record:
    return f'{record["image"]}\n  error: {record["error"]}'
  lines = [record['image']]
  lines += [f'  {p["prob"]:.4f}  {p["name"]} (label {p["label"]})' for p in record['top5']]
  if 'figure' in record:
    lines.append(f'  figure: {record["figure"]}')
  return '\n'.join(lines)


# ---------------------------------------------------------------------------- loading

def _read_json(path: str, what: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise UserError(f'{path} is missing: {what}') from None
  except (OSError, ValueError) as e:
    raise UserError(f'{path} cannot be read ({e}).') from None


def workdir_class_names(workdir: str) -> list[str]:
  path = os.path.join(workdir, 'classes.json')
  content = _read_json(path, 'training writes it ({"classes": [names in label order]}).')
  names = content.get('classes') if isinstance(content, dict) else None
  if not isinstance(names, list) or not names:
    raise UserError(f'{path} holds no "classes" list.')
  return [str(name) for name in names]


def _image_sizes(config) -> tuple[int, int]:
  try:
    resize, crop = int(config.dataset.resize_size), int(config.dataset.crop_size)
  except (AttributeError, KeyError, TypeError, ValueError):
    raise ConfigError('the config has no dataset.resize_size and dataset.crop_size.') from None
  check_image_size(crop, 'dataset.crop_size')
  if resize < crop:
    raise ConfigError(f'dataset.resize_size={resize} is smaller than dataset.crop_size={crop}.')
  return resize, crop


def _query_position(config) -> tuple[float, float]:
  """visualize.query_position of the config, or the default where a config has none."""
  try:
    return tuple(float(f) for f in config.visualize.query_position)
  except (AttributeError, KeyError, TypeError, ValueError):
    return (0.5, 0.5)


def _create_model(config, num_classes: int, origin: str):
  try:
    return create_model(config.model, num_classes)
  except ConfigError as e:
    raise ConfigError(f'{e} (in {origin})') from None
  except AttributeError:
    raise ConfigError(f'{origin} has no model section.') from None


def predictor_from_workdir(workdir: str, checkpoint: str = 'latest', config=None) -> Predictor:
  """A training workdir's model, config and class names, with the variables `checkpoint` names
  (latest, best, or a path: clan_jax/inference/model_source.py)."""
  workdir = require_workdir(workdir)  # Else the workdir it holds or is inside, named.
  origin = '--config' if config is not None else os.path.join(workdir, RUN_CONFIG)
  config = config if config is not None else read_run_config(workdir)
  class_names = workdir_class_names(workdir)
  resize, crop = _image_sizes(config)
  model = _create_model(config, len(class_names), origin)
  loaded = load_inference_variables(checkpoint, model, image_size=crop,
                                    sharding=_first_device(), workdir=workdir)
  return Predictor(model, loaded.variables, class_names, resize, crop, loaded.description,
                   config.model, _query_position(config))


def dataset_class_names(dataset_config, num_classes: int) -> list[str]:
  """The dataset's class names if it is prepared and has num_classes of them, else numbered."""
  numbered = [f'class_{i}' for i in range(num_classes)]
  try:
    builder = datasets.get_builder(dataset_config)
    prepared = builder.is_prepared()
  except UserError as e:
    logging.warning('class names are numbered: the dataset gives none (%s)', e)
    return numbered
  if not prepared:
    logging.warning("class names are numbered: dataset %r is not prepared under %s (python -m "
                    "clan_jax.datasets.prepare gives the names)", dataset_config.name,
                    builder.data_dir)
    return numbered
  names = list(datasets.label_feature(builder, dataset_config).names)
  if len(names) != num_classes:
    logging.warning('class names are numbered: dataset %r has %d classes, the checkpoint %d',
                    dataset_config.name, len(names), num_classes)
    return numbered
  return names


def predictor_from_file(path: str, config, allowed_globals: Sequence[str] = ()) -> Predictor:
  """The whole model of config.model from a file: a PyTorch checkpoint or a variables
  checkpoint folder. K comes from the file (a torch fc) or dataset.num_classes."""
  path = os.path.expanduser(path)
  if is_torch_file(path):
    arrays = load_torch_checkpoint(path, list(allowed_globals))
    num_classes = infer_num_classes(arrays, config.dataset.num_classes)
  else:
    num_classes = int(config.dataset.num_classes)
    if num_classes <= 0:
      raise UserError(f'{path} is a variables checkpoint: set --config.dataset.num_classes=K.')
  resize, crop = _image_sizes(config)
  model = _create_model(config, num_classes, '--config')
  loaded = load_inference_variables(path, model, image_size=crop, sharding=_first_device(),
                                    allowed_globals=allowed_globals)
  return Predictor(model, loaded.variables, dataset_class_names(config.dataset, num_classes),
                   resize, crop, loaded.description, config.model, _query_position(config))


def _first_device():
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
