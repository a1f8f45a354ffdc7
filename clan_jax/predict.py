r"""Top-5 classes of image files, from a training workdir or a PyTorch checkpoint.

    python -m clan_jax.predict --workdir=runs/cub [--checkpoint=latest|best] bird1.jpg bird2.png
    python -m clan_jax.predict --torch_checkpoint=clan_r50_cub.pth --config=configs/cub.py \
        [--config.KEY=VALUE ...] IMAGE ...

With --workdir the model, image sizes and class names come from the workdir (config.json and
classes.json, written by training; --config replaces config.json). With --torch_checkpoint,
--config is required and the class names come from the config's dataset if it is prepared
(else they are numbered, with a warning). Each image goes through clan_jax.datasets.preprocess's
eval transform, the one evaluation uses: any mode (RGBA, grayscale, CMYK, palette, 16-bit)
becomes RGB, then the square resize to dataset.resize_size and the centre crop to
dataset.crop_size. Probabilities are the softmax of the fused logits (model.fusion).

Output, in the order of the arguments: per image its path and up to 5 lines
`  0.8123  <class name> (label 3)`; with --json one object per line on stdout (logs go to
stderr):
    {"image": path, "top5": [{"label": int, "name": str, "prob": float}, ...]}
    {"image": path, "error": str}      for a missing or unreadable file
An unreadable file does not stop the others. Exit status: 0 all predicted, 1 some image could
not be read, 2 a user error (no such workdir or checkpoint, bad flag).
"""

import dataclasses
import json
import logging
import os
import sys
from typing import Any, Iterator, Sequence

import numpy as np

from clan_jax.base.errors import UserError

TOP_K = 5
EXIT_UNREADABLE = 1


@dataclasses.dataclass
class Predictor:
  """A model with its variables, class names and eval preprocessing sizes."""
  model: Any
  variables: Any
  class_names: list[str]
  resize_size: int
  crop_size: int
  source: str  # What the weights are, for the log.

  def __post_init__(self):
    import jax
    import jax.numpy as jnp

    from clan_jax.datasets.preprocess import normalize

    def probabilities(variables, images):
      # uint8 in, normalised on the device as in evaluation.eval_step.
      logits = self.model.apply(variables, normalize(images), train=False)['logits']
      return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    self._probabilities = jax.jit(probabilities)

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """uint8 (B, crop, crop, 3) -> float32 (B, K) class probabilities."""
    return np.asarray(self._probabilities(self.variables, images))

  def load_image(self, path: str) -> np.ndarray:
    """An image file -> uint8 (crop, crop, 3); UserError if it is missing or unreadable."""
    from clan_jax.datasets.preprocess import eval_transform, read_image_file

    try:
      return eval_transform(read_image_file(path), self.resize_size, self.crop_size)
    except PermissionError:
      raise UserError(f'{path}: permission denied.') from None

  def predict_files(self, paths: Sequence[str], batch_size: int) -> Iterator[dict]:
    """One record per path, in order: {'image', 'top5'} or {'image', 'error'}."""
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
      probabilities = {}
      if images:
        batch = np.zeros((size, self.crop_size, self.crop_size, 3), np.uint8)
        for row, i in enumerate(images):
          batch[row] = images[i]
        outputs = self.probabilities(batch)
        probabilities = {i: outputs[row] for row, i in enumerate(images)}
      for i, path in enumerate(chunk):
        if i in errors:
          yield {'image': path, 'error': errors[i]}
        else:
          yield {'image': path, 'top5': top_k(probabilities[i], self.class_names)}


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


def workdir_config(workdir: str):
  """The config a run was trained with (workdir/config.json, written by training)."""
  import ml_collections

  path = os.path.join(workdir, 'config.json')
  return ml_collections.ConfigDict(_read_json(
      path, 'training writes it; pass --config=the config file the run was trained with.'))


def workdir_class_names(workdir: str) -> list[str]:
  path = os.path.join(workdir, 'classes.json')
  content = _read_json(path, 'training writes it ({"classes": [names in label order]}).')
  names = content.get('classes') if isinstance(content, dict) else None
  if not isinstance(names, list) or not names:
    raise UserError(f'{path} holds no "classes" list.')
  return [str(name) for name in names]


def _image_sizes(config) -> tuple[int, int]:
  from clan_jax.config.validation import check_image_size
  from clan_jax.base.errors import ConfigError

  try:
    resize, crop = int(config.dataset.resize_size), int(config.dataset.crop_size)
  except (AttributeError, KeyError, TypeError, ValueError):
    raise ConfigError('the config has no dataset.resize_size and dataset.crop_size.') from None
  check_image_size(crop, 'dataset.crop_size')
  if resize < crop:
    raise ConfigError(f'dataset.resize_size={resize} is smaller than dataset.crop_size={crop}.')
  return resize, crop


def _create_model(config, num_classes: int, origin: str):
  from clan_jax.base.errors import ConfigError
  from clan_jax.models import create_model

  try:
    return create_model(config.model, num_classes)
  except ConfigError as e:
    raise ConfigError(f'{e} (in {origin})') from None
  except AttributeError:
    raise ConfigError(f'{origin} has no model section.') from None


def load_workdir(workdir: str, checkpoint: str = 'latest', config=None) -> Predictor:
  """The latest or best checkpoint of a training workdir, with its config and class names."""
  import jax
  import jax.numpy as jnp

  from clan_jax.train.checkpoints import read_variables

  if checkpoint not in ('latest', 'best'):
    raise UserError(f'--checkpoint={checkpoint!r} is invalid; allowed: latest, best.')
  workdir = os.path.expanduser(workdir)  # The shell leaves the ~ of --workdir=~/x.
  if not os.path.isdir(workdir):
    raise UserError(f'--workdir={workdir}: no such directory.')
  workdir = os.path.abspath(workdir)
  origin = '--config' if config is not None else os.path.join(workdir, 'config.json')
  config = config if config is not None else workdir_config(workdir)
  class_names = workdir_class_names(workdir)
  resize, crop = _image_sizes(config)
  model = _create_model(config, len(class_names), origin)

  def target():
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                 jnp.zeros((1, crop, crop, 3)), train=False))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        dict(abstract))

  variables, step = read_variables(os.path.join(workdir, 'checkpoints'), checkpoint, target)
  return Predictor(model, variables, class_names, resize, crop,
                   f'{workdir}, checkpoint step {step} ({checkpoint})')


def dataset_class_names(dataset_config, num_classes: int) -> list[str]:
  """The dataset's class names if it is prepared and has num_classes of them, else numbered."""
  from clan_jax import datasets

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
  names = list(builder.info.features['label'].names)
  if len(names) != num_classes:
    logging.warning('class names are numbered: dataset %r has %d classes, the checkpoint %d',
                    dataset_config.name, len(names), num_classes)
    return numbered
  return names


def load_torch(path: str, config, allowed_globals: Sequence[str] = ()) -> Predictor:
  """A PyTorch checkpoint of the whole model described by config.model."""
  from clan_jax import convert

  arrays = convert.load_torch_checkpoint(path, list(allowed_globals))
  num_classes = convert.infer_num_classes(arrays, config.dataset.num_classes)
  resize, crop = _image_sizes(config)
  model = _create_model(config, num_classes, '--config')
  variables = convert.torch_to_flax(arrays, model, image_size=crop)
  return Predictor(model, variables, dataset_class_names(config.dataset, num_classes), resize,
                   crop, path)


# ------------------------------------------------------------------------------- CLI

def _define_flags() -> None:
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file(
      'config', None, 'Config file (configs/*.py); with --workdir it replaces config.json.',
      lock_config=True)
  flags.DEFINE_string('workdir', '', 'A training workdir (config.json, classes.json, '
                      'checkpoints/).')
  flags.DEFINE_enum('checkpoint', 'latest', ['latest', 'best'],
                    "Which checkpoint of --workdir: the last one, or the best evaluated one.")
  flags.DEFINE_string('torch_checkpoint', '', 'A PyTorch checkpoint (.pth, .pt, .safetensors) '
                      'of the whole model of --config, instead of --workdir.')
  flags.DEFINE_list('allow_global', [], 'Python globals to allow in the .pth file, if you '
                    'trust it.')
  flags.DEFINE_integer('batch_size', 32, 'Images per forward pass.')
  flags.DEFINE_bool('json', False, 'One JSON object per image and line on stdout.')


def _load_predictor(flags_, config) -> Predictor:
  if flags_.workdir and flags_.torch_checkpoint:
    raise UserError('give either --workdir or --torch_checkpoint, not both.')
  if flags_.torch_checkpoint:
    if config is None:
      raise UserError('--torch_checkpoint needs --config (the configs/*.py file of the model).')
    if flags_['checkpoint'].present:
      raise UserError('--checkpoint applies to --workdir only.')
    return load_torch(flags_.torch_checkpoint, config, flags_.allow_global)
  if not flags_.workdir:
    raise UserError('give --workdir=DIR (a training workdir) or --torch_checkpoint=PATH '
                    'with --config.')
  return load_workdir(flags_.workdir, flags_.checkpoint, config)


def main(argv: list[str]) -> int:
  from absl import flags
  from absl import logging as absl_logging

  from clan_jax.base import cli

  flags_ = flags.FLAGS
  paths = argv[1:]
  if not paths:
    raise UserError('no image given: python -m clan_jax.predict --workdir=DIR IMAGE ...')
  if flags_.batch_size <= 0:
    raise UserError(f'--batch_size={flags_.batch_size} is invalid; it must be positive.')
  config = cli.load_config_flag(flags_.config) if flags_.config is not None else None
  absl_logging.set_verbosity(absl_logging.INFO)
  predictor = _load_predictor(flags_, config)
  logging.info('predicting %d images with %s: %d classes, %d px', len(paths), predictor.source,
               len(predictor.class_names), predictor.crop_size)
  failed = 0
  for record in predictor.predict_files(paths, flags_.batch_size):
    failed += 'error' in record
    print(json.dumps(record) if flags_.json else format_record(record), flush=True)
  if failed:
    print(f'{failed} of {len(paths)} images could not be read.', file=sys.stderr)
    return EXIT_UNREADABLE
  return 0


if __name__ == '__main__':
  from clan_jax.base import cli

  _define_flags()
  cli.run(main)
