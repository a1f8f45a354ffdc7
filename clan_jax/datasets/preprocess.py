"""Reference preprocessing: what pixels an image file gives, and the eval transform.

    file bytes -> normalize_encoded_image (Pillow: odd files become RGB PNG)
               -> decode (TensorFlow's decoder, 3 channels)
               -> resize to resize_size x resize_size (bilinear, antialiased) -> round to uint8
               -> centre crop crop_size x crop_size -> ImageNet normalisation (on the device)

The dataset builders store images through `normalize_encoded_image`, and the tf.data
pipeline (input_pipeline.py) runs the TensorFlow functions below, so a single image
preprocessed here equals the pipeline's eval output exactly (tested). TensorFlow is
imported lazily; without it (e.g. a bare GPU image) `load_and_preprocess` falls back to
Pillow's decoder and jax.image.resize, which can differ by a few levels on JPEG files
(the two libjpeg decoders upsample chroma differently).

Choices (docs/ARCHITECTURE.md): the square resize is the FGVC convention (512 -> crop 448);
rounding to uint8 before the crop is what the uint8 image cache does; EXIF orientation is
ignored and alpha dropped, as TensorFlow's decoders do.
"""

import functools
import importlib
import io
import logging
import os
from typing import Union

import numpy as np

from clan_jax.base.errors import UserError

# ImageNet statistics on the 0-255 scale (torchvision's mean/std x 255).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
# Files that TensorFlow's decoders read as intended; anything else is re-encoded.
NATIVE_FORMATS = ('JPEG', 'PNG')
NATIVE_MODES = ('RGB', 'L')


class UndecodableImageError(UserError):
  """An image file that cannot be decoded (corrupt, truncated, not an image)."""


def normalize_encoded_image(data: bytes, name: str = 'image') -> bytes:
  """Bytes of an image file -> bytes that TensorFlow's decoder reads as the intended RGB image.

  JPEG and PNG files in mode RGB or L (grayscale) are returned unchanged. Anything else
  (CMYK or YCCK JPEG, RGBA or palette PNG, 16-bit, GIF, BMP, WebP, TIFF, a PNG named .jpg
  is fine as it is) is decoded by Pillow, converted to RGB (alpha dropped) and re-encoded
  as PNG, which is lossless. Raises UndecodableImageError for a corrupt or truncated file.
  """
  from PIL import Image  # Late: the GPU step benchmark imports this module, maybe without Pillow.

  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # A full decode: a truncated file fails here, not in training.
      if image.format in NATIVE_FORMATS and image.mode in NATIVE_MODES:
        return data
      buffer = io.BytesIO()
      image.convert('RGB').save(buffer, format='PNG')
      return buffer.getvalue()
  except Image.UnidentifiedImageError:  # Its own message names a BytesIO object, not the file.
    raise UndecodableImageError(f'{name}: cannot be decoded as an image (not an image file, '
                                'or a format Pillow does not read).') from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise UndecodableImageError(f'{name}: cannot be decoded as an image ({e}).') from None


def read_image_file(path: Union[str, os.PathLike]) -> bytes:
  """A file's bytes, normalised (normalize_encoded_image); UserError if missing or corrupt."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except FileNotFoundError:
    raise UserError(f'{path}: no such image file.') from None
  except IsADirectoryError:
    raise UserError(f'{path}: is a directory, not an image file.') from None
  return normalize_encoded_image(data, os.fspath(path))


# ------------------------------------------------------- TensorFlow (used by tf.data)

def decode_tf(encoded):
  """Encoded JPEG/PNG bytes (a scalar string tensor) -> uint8 (H, W, 3)."""
  import tensorflow as tf  # Late: without TensorFlow, load_and_preprocess falls back.

  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def resize_tf(image, size: int):
  """uint8 (H, W, 3) -> uint8 (size, size, 3): bilinear, antialiased, rounded."""
  import tensorflow as tf  # Late: without TensorFlow, load_and_preprocess falls back.

  resized = tf.image.resize(tf.cast(image, tf.float32), (size, size), method='bilinear',
                            antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def center_crop_tf(image, size: int):
  """The central size x size window (offset (H - size) // 2, as `center_crop`)."""
  import tensorflow as tf  # Late: without TensorFlow, load_and_preprocess falls back.

  height, width = tf.shape(image)[0], tf.shape(image)[1]
  return tf.image.crop_to_bounding_box(image, (height - size) // 2, (width - size) // 2,
                                       size, size)


def eval_transform_tf(encoded, resize_size: int, crop_size: int):
  """Encoded bytes -> uint8 (crop_size, crop_size, 3): decode, resize, centre crop."""
  return center_crop_tf(resize_tf(decode_tf(encoded), resize_size), crop_size)


# -------------------------------------------------------------- single images (numpy)

def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  height, width = image.shape[:2]
  if height < size or width < size:
    raise ValueError(f'cannot crop {size}x{size} from a {height}x{width} image.')
  top, left = (height - size) // 2, (width - size) // 2
  return image[top:top + size, left:left + size]


def normalize(images):
  """uint8 (..., 3) -> float32 ImageNet-normalised; numpy in, numpy out; works inside jit."""
  if isinstance(images, np.ndarray):
    return (images.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
  import jax.numpy as jnp  # Late: the builders and clan-prepare use this module without JAX.

  return (jnp.asarray(images, jnp.float32) - IMAGENET_MEAN) / IMAGENET_STD


@functools.cache
def _tensorflow_available() -> bool:
  try:
    importlib.import_module('tensorflow')
  except ImportError:
    logging.warning('TensorFlow is not installed: images are decoded by Pillow and resized by '
                    'jax, which can differ from the training pipeline by a few levels.')
    return False
  return True


def _fallback_transform(encoded: bytes, resize_size: int, crop_size: int) -> np.ndarray:
  import jax  # Late: the builders and clan-prepare use this module without JAX.
  import jax.numpy as jnp  # Late: as jax.
  from PIL import Image  # Late: the GPU step benchmark imports this module, maybe without Pillow.

  with Image.open(io.BytesIO(encoded)) as image:
    pixels = np.asarray(image.convert('RGB'), np.float32)
  resized = jax.image.resize(pixels, (resize_size, resize_size, 3), method='linear',
                             antialias=True)
  resized = np.asarray(jnp.clip(jnp.round(resized), 0, 255)).astype(np.uint8)
  return center_crop(resized, crop_size)


def eval_transform(encoded: bytes, resize_size: int, crop_size: int) -> np.ndarray:
  """Normalised encoded bytes -> uint8 (crop_size, crop_size, 3), as the eval pipeline."""
  if resize_size < crop_size:
    raise ValueError(f'resize_size={resize_size} is smaller than crop_size={crop_size}.')
  if _tensorflow_available():
    return eval_transform_tf(encoded, resize_size, crop_size).numpy()
  return _fallback_transform(encoded, resize_size, crop_size)


def load_and_preprocess(path: Union[str, os.PathLike], resize_size: int,
                        crop_size: int) -> np.ndarray:
  """An image file -> float32 (crop_size, crop_size, 3), ImageNet-normalised, for `apply`."""
  return normalize(eval_transform(read_image_file(path), resize_size, crop_size))
