"""Reference preprocessing: image files to RGB, resize, centre crop, normalisation."""

import io

import numpy as np
import pytest
from PIL import Image

from clan_jax.datasets import preprocess
from clan_jax.base.errors import UserError
from helpers.fake_data import encode, photo


@pytest.mark.parametrize('kind, native', [
    ('jpeg', True), ('gray_jpeg', True), ('png', True), ('cmyk_jpeg', False),
    ('rgba_png', False), ('palette_png', False)])
def test_normalize_keeps_native_files_and_reencodes_the_rest(kind, native):
  data = encode(photo(1), kind, seed=1)
  normalized = preprocess.normalize_encoded_image(data, 'x.jpg')
  assert (normalized == data) == native
  with Image.open(io.BytesIO(normalized)) as image:
    assert image.format in ('JPEG', 'PNG') and image.mode in ('RGB', 'L')
    if not native:  # Pillow's RGB conversion, stored losslessly.
      with Image.open(io.BytesIO(data)) as original:
        np.testing.assert_array_equal(np.asarray(image), np.asarray(original.convert('RGB')))


def test_alpha_is_dropped_not_composited():
  rgba = encode(photo(2), 'rgba_png', seed=2)
  pixels = preprocess.decode_tf(preprocess.normalize_encoded_image(rgba)).numpy()
  np.testing.assert_array_equal(pixels, photo(2))


def test_undecodable_and_missing_files_name_the_file(tmp_path):
  with pytest.raises(preprocess.UndecodableImageError, match='b.jpg: cannot be decoded'):
    preprocess.normalize_encoded_image(encode(None, 'corrupt'), 'b.jpg')
  truncated = encode(photo(3), 'jpeg')[:200]
  with pytest.raises(preprocess.UndecodableImageError):
    preprocess.normalize_encoded_image(truncated, 't.jpg')
  with pytest.raises(UserError, match='absent.jpg: no such image file'):
    preprocess.read_image_file(tmp_path / 'absent.jpg')


def test_eval_transform_decodes_resizes_and_crops():
  image = photo(4, 90, 120)
  encoded = encode(image, 'png')
  out = preprocess.eval_transform(encoded, 80, 64)
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8
  # The resize is antialiased bilinear; a constant image stays constant.
  flat = preprocess.eval_transform(encode(np.full((50, 70, 3), 77, np.uint8), 'png'), 40, 32)
  assert np.all(flat == 77)
  with pytest.raises(ValueError, match='smaller than crop_size'):
    preprocess.eval_transform(encoded, 32, 64)


def test_fallback_without_tensorflow_is_within_one_level_on_png(monkeypatch):
  encoded = encode(photo(5, 75, 100), 'png')
  reference = preprocess.eval_transform(encoded, 80, 64)
  fallback = preprocess._fallback_transform(encoded, 80, 64)
  difference = np.abs(reference.astype(int) - fallback.astype(int))
  assert difference.max() <= 1 and difference.mean() < 0.01


def test_center_crop_and_normalize():
  image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
  np.testing.assert_array_equal(preprocess.center_crop(image, 4), image[1:5, 2:6])
  with pytest.raises(ValueError, match='cannot crop 9x9'):
    preprocess.center_crop(image, 9)
  mean = np.array([[123.675, 116.28, 103.53]], np.float32)
  np.testing.assert_allclose(preprocess.normalize(mean), 0, atol=1e-5)


def test_load_and_preprocess_of_a_file(tmp_path):
  path = tmp_path / 'cmyk.jpg'
  path.write_bytes(encode(photo(6), 'cmyk_jpeg'))
  out = preprocess.load_and_preprocess(path, resize_size=80, crop_size=64)
  assert out.shape == (64, 64, 3) and out.dtype == np.float32
  expected = preprocess.normalize(preprocess.eval_transform(
      preprocess.normalize_encoded_image(path.read_bytes()), 80, 64))
  np.testing.assert_array_equal(out, expected)
