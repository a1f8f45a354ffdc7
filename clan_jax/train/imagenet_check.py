"""The preflight's ImageNet check: do the weights and the input pipeline fit together?

The file of init.torch_checkpoint, loaded whole as the ImageNet ResNet classifier it should be
(its 1000-class `fc`), classifies the first preflight.num_images training images, put through
the evaluation preprocessing at ImageNet's 224 px (the square resize scaled as the recipe's
resize_size / crop_size: 512 -> 448 becomes 256 -> 224) and normalised by the function the
train step uses. For CUB, Cars, Aircraft and Dogs, the share of images with a class of the
dataset's ImageNet group among their top-5 (clan_jax/datasets/imagenet_groups.py) must reach
preflight.min_group_fraction; for other datasets the most frequent top-1 classes are listed.
A wrong weights file, channel order, normalisation, resize or decode shows as a low share or
as off statistics of the normalised batch (docs/TRAINING.md, Preflight).
"""

import collections
import copy
import dataclasses
import functools
from typing import Any, Optional

import jax
import numpy as np

from clan_jax.datasets import imagenet_groups, input_pipeline, preprocess
from clan_jax.models.resnet import ResNetClassifier
from clan_jax.pytorch.conversion import BACKBONE_PREFIXES, load_torch_checkpoint, torch_to_flax
from clan_jax.train.preflight import Section, dataset_key

IMAGE_SIZE = 224  # ImageNet's evaluation crop.
BATCH_SIZE = 32
TOP_CLASSES = 5  # Most frequent top-1 classes listed.
# What ImageNet normalisation can make of uint8 pixels, per channel: [-m / s, (255 - m) / s].
NORMALISED_RANGE = (-preprocess.IMAGENET_MEAN / preprocess.IMAGENET_STD,
                    (255 - preprocess.IMAGENET_MEAN) / preprocess.IMAGENET_STD)
FLAT_STD = 0.05  # A channel spread below this: flat images (a decode or scaling problem).
# Far from ImageNet's own statistics (0 and 1 after normalisation): a warning only, since a
# dataset may differ (e.g. dark or grey images).
USUAL_MEAN = 1.0
USUAL_STD = (0.5, 1.5)


@dataclasses.dataclass
class ImageNetCheck:
  skipped: str = ''  # Why the check did not run ('' when it ran).
  source: str = ''
  num_images: int = 0
  resize_size: int = 0
  image_size: int = 0
  group: Optional[imagenet_groups.Group] = None  # None: a dataset without a known group.
  group_fraction: Optional[float] = None
  min_group_fraction: float = 0.0
  top1: list = dataclasses.field(default_factory=list)  # [(name, share)], most frequent first.
  channel_mean: tuple = ()
  channel_std: tuple = ()
  problems: list = dataclasses.field(default_factory=list)  # Failures: preflight exits non-zero.
  warnings: list = dataclasses.field(default_factory=list)

  def section(self) -> Section:
    if self.skipped:
      return Section([f'ImageNet check: skipped: {self.skipped}'], [])
    lines = [f'ImageNet check: {self.source} on the first {self.num_images} training images '
             f'(eval preprocessing, resize {self.resize_size} -> crop {self.image_size} px)']
    if self.group is not None:
      lines.append(f'  {self.group_fraction:.1%} have {self.group.title} among their ImageNet '
                   f'top-5 (at least {self.min_group_fraction:.0%} expected)')
    shares = ', '.join(f'{name} {share:.0%}' for name, share in self.top1)
    lines.append(f'  most frequent top-1: {shares}')
    lines.append('  normalised batch, channels R G B: mean '
                 + ' '.join(f'{v:+.2f}' for v in self.channel_mean) + ', std '
                 + ' '.join(f'{v:.2f}' for v in self.channel_std) + ' (expected near 0 and 1)')
    lines += [f'  !!! FAILED: {problem}' for problem in self.problems]
    return Section(lines, list(self.warnings))


def skip_reason(init: Any) -> str:
  """Why the weights cannot be checked on ImageNet ('' when they can be tried)."""
  if not init.torch_checkpoint:
    return 'no init.torch_checkpoint (the check needs an ImageNet ResNet file).'
  if not init.torch_backbone_only:
    return ('init.torch_backbone_only=False: the file is a whole model of this config, not an '
            'ImageNet classifier.')
  return ''


def fc_reason(arrays: dict, path: str) -> str:
  """Why the file's classes cannot be checked ('' when it has ImageNet's 1000-class fc)."""
  fc = arrays.get('fc.weight')
  if fc is not None and fc.shape[0] == len(imagenet_groups.NAMES):
    return ''
  found = 'no fc' if fc is None else f'an fc of {fc.shape[0]} classes'
  return f'{path} has {found}, not ImageNet\'s 1000 (a backbone-only file?).'


def imagenet_classifier(arrays: dict, depth: int, image_size: int):
  """(model, variables): the file's backbone and fc as a 1000-class ResNet classifier."""
  model = ResNetClassifier(len(imagenet_groups.NAMES), depth=depth)
  kept = {k: v for k, v in arrays.items() if k.split('.')[0] in (*BACKBONE_PREFIXES, 'fc')}
  return model, torch_to_flax(kept, model, image_size=image_size)


def first_images(data: input_pipeline.SplitData, dataset_config: Any, count: int,
                 resize_size: int, crop_size: int) -> np.ndarray:
  """The first `count` images through the eval preprocessing at resize_size -> crop_size."""
  if data.cached:  # Already resized to the recipe's size: resized again from there.
    return np.stack([preprocess.center_crop(
        preprocess.resize_tf(image, resize_size).numpy(), crop_size)
                     for image in data.images[:count]])
  sized = copy.deepcopy(dataset_config)
  sized.resize_size, sized.crop_size = resize_size, crop_size
  return input_pipeline.eval_examples(data, sized, count)['image']


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, variables, images):
  return model.apply(variables, images, train=False)['logits']


def classify(model, variables, images: np.ndarray) -> np.ndarray:
  """Logits of every image, in batches of one shape (the last padded): one compilation."""
  batch = min(BATCH_SIZE, len(images))
  logits = []
  for start in range(0, len(images), batch):
    chunk = images[start:start + batch]
    padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]),
                                             chunk.dtype)])
    logits.append(np.asarray(_logits(model, variables, padded))[:len(chunk)])
  return np.concatenate(logits)


def assess(check: ImageNetCheck, logits: np.ndarray, normalised: np.ndarray) -> ImageNetCheck:
  """Fills in the shares, the statistics and what failed."""
  top5 = np.argsort(-logits, axis=1)[:, :5]
  counts = collections.Counter(top5[:, 0].tolist()).most_common(TOP_CLASSES)
  check.top1 = [(imagenet_groups.NAMES[i], n / len(logits)) for i, n in counts]
  check.channel_mean = tuple(float(v) for v in normalised.mean(axis=(0, 1, 2)))
  check.channel_std = tuple(float(v) for v in normalised.std(axis=(0, 1, 2)))
  if check.group is not None:
    check.group_fraction = float(np.isin(top5, check.group.indices).any(axis=1).mean())
    if check.group_fraction < check.min_group_fraction:
      check.problems.append(
          f'only {check.group_fraction:.0%} of {len(logits)} training images have '
          f'{check.group.title} among their ImageNet top-5 (at least '
          f'{check.min_group_fraction:.0%} expected)')
  low, high = NORMALISED_RANGE
  tolerance = 1e-3
  if np.any(normalised.min(axis=(0, 1, 2)) < low - tolerance) or np.any(
      normalised.max(axis=(0, 1, 2)) > high + tolerance):
    check.problems.append('the normalised images hold values that ImageNet normalisation of '
                          f'0-255 pixels cannot give (range {normalised.min():.3g} to '
                          f'{normalised.max():.3g}): unnormalised or rescaled images')
  if min(check.channel_std) < FLAT_STD:
    check.problems.append(f'the normalised images are nearly flat (channel std '
                          f'{min(check.channel_std):.3g}): images scaled twice, or a decode '
                          'problem')
  if (max(abs(v) for v in check.channel_mean) > USUAL_MEAN
      or not all(USUAL_STD[0] <= v <= USUAL_STD[1] for v in check.channel_std)):
    check.warnings.append('the normalised batch is far from mean 0 and std 1 per channel: '
                          'check the decode, channel order and normalisation if these are '
                          'photographs.')
  return check


def run_imagenet_check(config: Any, train_data: input_pipeline.SplitData,
                       image_size: int = IMAGE_SIZE) -> ImageNetCheck:
  """The check of init.torch_checkpoint and the pipeline on the training split's first images."""
  reason = skip_reason(config.init)
  if reason:
    return ImageNetCheck(skipped=reason)
  init = config.init
  arrays = load_torch_checkpoint(init.torch_checkpoint,
                                 [g for g in init.allowed_globals.split(',') if g])
  reason = fc_reason(arrays, init.torch_checkpoint)
  if reason:
    return ImageNetCheck(skipped=reason)
  model, variables = imagenet_classifier(arrays, config.model.depth, image_size)
  dataset = config.dataset
  resize = round(image_size * dataset.resize_size / dataset.crop_size)
  images = first_images(train_data, dataset, config.preflight.num_images, resize, image_size)
  normalised = preprocess.normalize(images)  # The train and eval steps' normalisation.
  key = dataset_key(dataset)
  check = ImageNetCheck(
      source=f'ResNet-{config.model.depth} ImageNet classifier of {init.torch_checkpoint}',
      num_images=len(images), resize_size=resize, image_size=image_size,
      group=imagenet_groups.GROUPS.get(key) if key else None,
      min_group_fraction=config.preflight.min_group_fraction)
  return assess(check, classify(model, variables, normalised), normalised)
