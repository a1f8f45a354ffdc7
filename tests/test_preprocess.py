"""Reference eval preprocessing: any image mode to RGB, resize, centre crop, normalisation."""

import io

import numpy as np
import pytest
from PIL import Image

from clan_jax.errors import UserError
from clan_jax.preprocess import (IMAGENET_MEAN, IMAGENET_STD, center_crop, decode_image,
                                 load_and_preprocess, normalize, resize)


def _photo(height=75, width=100, seed=0):
  rng = np.random.default_rng(seed)
  smooth = np.cumsum(rng.integers(-8, 9, (height, width, 3)), axis=1)
  return np.clip(smooth + 128, 0, 255).astype(np.uint8)


@pytest.mark.parametrize('mode', ['L', 'RGBA', 'CMYK', 'P', 'I;16', 'RGB'])
def test_every_mode_decodes_to_uint8_rgb(tmp_path, mode):
  image = Image.fromarray(_photo())
  image = image.convert(mode) if mode != 'I;16' else image.convert('L').convert('I;16')
  path = tmp_path / f'image_{mode.replace(";", "")}.{"jpg" if mode in ("L", "CMYK") else "png"}'
  image.save(path)
  decoded = decode_image(path)
  assert decoded.dtype == np.uint8 and decoded.shape == (75, 100, 3)
  if mode == 'RGB':
    np.testing.assert_array_equal(decoded, _photo())


def test_png_inside_a_jpg_name_and_alpha_dropped(tmp_path):
  rgba = np.dstack([_photo(), np.full((75, 100), 7, np.uint8)])
  path = tmp_path / 'actually_png.jpg'
  Image.fromarray(rgba, 'RGBA').save(path, format='PNG')
  np.testing.assert_array_equal(decode_image(path), _photo())


def test_undecodable_and_missing_files_name_the_file(tmp_path):
  broken = tmp_path / 'broken.jpg'
  broken.write_bytes(b'\xff\xd8\xff garbage')
  with pytest.raises(UserError, match='broken.jpg: cannot be decoded'):
    decode_image(broken)
  with pytest.raises(UserError, match='absent.jpg: no such image file'):
    decode_image(tmp_path / 'absent.jpg')


def test_resize_matches_tensorflow_antialiased_bilinear():
  tf = pytest.importorskip('tensorflow')
  for shape, size in (((75, 100), 64), ((300, 200), 96), ((40, 50), 128)):
    image = _photo(*shape)
    expected = tf.cast(tf.clip_by_value(tf.round(
        tf.image.resize(image, (size, size), method='bilinear', antialias=True)), 0, 255),
                       tf.uint8).numpy()
    ours = resize(image, size)
    assert ours.shape == (size, size, 3)
    # Rounding of values within float error of .5 may differ by one level, nothing more.
    difference = np.abs(ours.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and np.mean(difference) < 1e-3


def test_center_crop_normalize_and_the_whole_chain(tmp_path):
  image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
  np.testing.assert_array_equal(center_crop(image, 4), image[1:5, 2:6])
  with pytest.raises(ValueError, match='cannot crop 9x9'):
    center_crop(image, 9)
  np.testing.assert_allclose(normalize(np.array([[123.675, 116.28, 103.53]])), 0, atol=1e-5)
  path = tmp_path / 'photo.png'
  Image.fromarray(_photo()).save(path)
  out = load_and_preprocess(path, resize_size=80, crop_size=64)
  assert out.shape == (64, 64, 3) and out.dtype == np.float32
  expected = (center_crop(resize(_photo(), 80), 64) - IMAGENET_MEAN) / IMAGENET_STD
  np.testing.assert_allclose(out, expected, rtol=1e-6)
