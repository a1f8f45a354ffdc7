"""Reference evaluation preprocessing for single images.

decode (any mode -> RGB) -> resize to resize_size x resize_size (bilinear, antialiased)
-> round to uint8 -> centre crop crop_size x crop_size -> ImageNet normalisation.

This is the definition that the tf.data pipeline reproduces: the square resize is the
FGVC convention (e.g. 512 -> 448), the antialiased bilinear kernel is the one of
tf.image.resize(..., antialias=True) (jax.image.resize implements the same
scale-and-translate kernel), and rounding to uint8 before the crop is what a uint8
image cache does. EXIF orientation is ignored, as TensorFlow's decoders ignore it.
"""

import os
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from clan_jax.errors import UserError

# ImageNet statistics on the 0-255 scale (torchvision's mean/std x 255).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def decode_image(path: Union[str, os.PathLike]) -> np.ndarray:
  """Reads an image file of any mode (L, P, CMYK, RGBA, I;16, ...) as uint8 RGB (H, W, 3)."""
  from PIL import Image, UnidentifiedImageError  # Lazy: only image input needs Pillow.

  try:
    with Image.open(path) as image:
      image.load()
      # Alpha is dropped, not composited, as TensorFlow's decoders do with channels=3.
      return np.asarray(image.convert('RGB'), dtype=np.uint8)
  except FileNotFoundError as e:
    raise UserError(f'{path}: no such image file.') from e
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
    raise UserError(f'{path}: cannot be decoded as an image ({e}).') from e


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear, antialiased resize of a uint8 (H, W, 3) image to (size, size, 3) uint8."""
  resized = jax.image.resize(jnp.asarray(image, jnp.float32), (size, size, image.shape[-1]),
                             method='linear', antialias=True)
  return np.asarray(jnp.clip(jnp.round(resized), 0, 255).astype(jnp.uint8))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  height, width = image.shape[:2]
  if height < size or width < size:
    raise ValueError(f'cannot crop {size}x{size} from a {height}x{width} image.')
  top, left = (height - size) // 2, (width - size) // 2
  return image[top:top + size, left:left + size]


def normalize(images):
  """uint8 (..., 3) -> float32 ImageNet-normalised; works on numpy and inside jit."""
  xp = jnp if isinstance(images, jax.Array) else np
  return (xp.asarray(images, xp.float32) - IMAGENET_MEAN) / IMAGENET_STD


def preprocess_image(image: np.ndarray, resize_size: int, crop_size: int) -> np.ndarray:
  """uint8 RGB (H, W, 3) -> float32 (crop_size, crop_size, 3), ImageNet-normalised."""
  if resize_size < crop_size:
    raise ValueError(f'resize_size={resize_size} is smaller than crop_size={crop_size}.')
  return normalize(center_crop(resize(image, resize_size), crop_size))


def load_and_preprocess(path: Union[str, os.PathLike], resize_size: int,
                        crop_size: int) -> np.ndarray:
  """An image file -> float32 (crop_size, crop_size, 3), ready for `model.apply`."""
  return preprocess_image(decode_image(path), resize_size, crop_size)
