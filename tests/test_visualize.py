"""clan_jax/viz (figures, attention): figure functions on synthetic maps, --mode=visualize, TensorBoard images.

The synthetic outputs have the shapes of the model's (tests/test_clan.py checks those); the
real model's outputs go through the figures in the command-line test. The last tests share
the session's `trained_synthetic_workdir` (a tiny CLAN-R18 trained by main.py, 64-px
images: mid maps 8x8 (layer2) and 4x4 (layer3), top map 2x2).
"""

import glob
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from clan_jax.base.errors import ConfigError, UserError
from clan_jax.config.validation import validate_visualize_config
from clan_jax.inference.run_modes import visualize_run
from clan_jax.train.loop import train_and_evaluate
from clan_jax.viz import attention, figures
from helpers.commands import REPO_ROOT, cli_environment
from helpers.figure_pixels import has_red_title, title_band
from helpers.configs import load_config_file
from helpers.trained_model import TRAINED_SYNTHETIC_EVAL_STEPS, TRAINED_SYNTHETIC_STEPS
from configs import default

MIDS = ('layer2', 'layer3')
SIZE = 64  # Image size: layer2 8x8, layer3 4x4, top 2x2.

# With predict's tests on one pytest-xdist worker (make test: --dist loadgroup), so that the
# shared trained workdir is built once while the other worker runs other tests.
pytestmark = pytest.mark.xdist_group('trained_synthetic')


def _hot(shape, cell):
  values = np.zeros(shape, np.float32)
  values[cell] = 1.0
  return values


def _hot_block(map_shape, cell, size=SIZE):
  """Pixels of the image that map cell `cell` covers."""
  block = np.zeros((size, size), bool)
  h, w = size // map_shape[0], size // map_shape[1]
  block[cell[0] * h:(cell[0] + 1) * h, cell[1] * w:(cell[1] + 1) * w] = True
  return block


def _assert_hot_exactly(pixels, block):
  """In the 'jet' overlay a high value is red, a low one blue."""
  redness = pixels[..., 0].astype(int) - pixels[..., 2].astype(int)
  assert redness[block].min() > redness[~block].max()


def _grey_image():
  return np.full((SIZE, SIZE, 3), 128, np.uint8)


def test_positions_and_nearest_upsampling():
  assert figures.stage_stride('layer2') == 8 and figures.stage_stride('layer4') == 32
  assert figures.query_cell((0.5, 0.5), (8, 8)) == (4, 4)
  assert figures.query_cell((0.0, 1.0), (4, 4)) == (0, 3)  # 1.0 is the last cell.
  assert figures.cell_centre((0, 3), (4, 4), (64, 64)) == (55.5, 7.5)
  up = figures.upsample_nearest(np.arange(4.0).reshape(2, 2), (4, 6))
  np.testing.assert_array_equal(up, [[0, 0, 0, 1, 1, 1]] * 2 + [[2, 2, 2, 3, 3, 3]] * 2)
  # A 32 px image's top map is 1x1; a one-row or one-column map keeps its orientation.
  assert figures.as_2d_map(np.ones((1, 1, 1))).shape == (1, 1)
  assert figures.as_2d_map(np.ones((1, 3, 1, 1))).shape == (3, 1)
  assert figures.overlay(_grey_image(), np.ones((1, 1))).shape == (SIZE, SIZE, 3)


def test_a_hot_cell_shows_in_its_block_of_the_overlay():
  pixels = figures.overlay(_grey_image(), _hot((4, 4), (1, 2)))
  assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8
  _assert_hot_exactly(pixels, _hot_block((4, 4), (1, 2)))
  flat = figures.overlay(_grey_image(), np.full((4, 4), 0.3))  # Constant: no hot spot.
  assert len(np.unique(flat.reshape(-1, 3), axis=0)) == 1


def _cross_attention_outputs(batch=2, heads=2, query=(4, 4), hot_top=(0, 1)):
  """Random attention, except that layer2's query row looks only at top cell `hot_top`."""
  rng = np.random.default_rng(0)
  attention = {}
  for name, side in (('layer2', 8), ('layer3', 4)):
    a = rng.random((batch, heads, side * side, 4)) * 0.1
    attention[name] = a / a.sum(-1, keepdims=True)
  attention['layer2'][:, :, query[0] * 8 + query[1], :] = _hot((2, 2), hot_top).reshape(4)
  clsa = {'layer2': _hot((batch, 8, 8, 1), (slice(None), 6, 1)),
          'layer3': _hot((batch, 4, 4, 1), (slice(None), 0, 0)),
          'fused': _hot((batch, 2, 2, 1), (slice(None), 1, 1))}
  return {'logits': np.eye(4)[[2, 3][:batch]], 'clsa': clsa, 'clca': attention}


def test_cross_attention_panels_titles_markers_and_hot_spots():
  outputs = _cross_attention_outputs()
  clca = {n: figures.clca_row(a, 4 * 8 + 4 if n == 'layer2' else 2 * 4 + 2)[0]
          for n, a in outputs['clca'].items()}
  clsa = {n: m[0] for n, m in outputs['clsa'].items()}
  panels = figures.example_panels(_grey_image(), clsa, clca, MIDS, (0.5, 0.5))
  assert [p.title for p in panels] == [
      'input', 'CLSA layer2', 'CLSA layer3', 'CLSA fused', 'CLCA layer2 row at (4, 4)',
      'CLCA layer3 row at (2, 2)']
  assert panels[0].value_range is None  # The input has no colour bar.
  assert panels[1].value_range == (0.0, 1.0)  # The ends of the map's colour bar.
  # The query's cell centre, on its mid map's CLSA and CLCA panels.
  assert [p.marker for p in panels] == [None, (35.5, 35.5), (39.5, 39.5), None, (35.5, 35.5),
                                        (39.5, 39.5)]
  _assert_hot_exactly(panels[1].pixels, _hot_block((8, 8), (6, 1)))
  _assert_hot_exactly(panels[2].pixels, _hot_block((4, 4), (0, 0)))
  _assert_hot_exactly(panels[3].pixels, _hot_block((2, 2), (1, 1)))
  _assert_hot_exactly(panels[4].pixels, _hot_block((2, 2), (0, 1)))  # The query's row.


def test_figures_from_the_full_attention_are_one_fixed_size_image_each():
  outputs = _cross_attention_outputs()
  images = np.stack([_grey_image()] * 2)
  drawn = figures.attention_figures(images, np.array([2, 0]), outputs,
                                        ['a', 'b', 'c', 'd'], MIDS, (0.5, 0.5))
  width = round(6 * figures.PANEL_INCHES * figures.DPI)
  assert [f.shape for f in drawn] == [(drawn[0].shape[0], width, 3)] * 2
  assert all(f.dtype == np.uint8 for f in drawn) and not np.array_equal(*drawn)


@pytest.mark.parametrize('low, high, labels', [
    (1.09e-33, 1.0, ('0.0', '1.0')),  # A saturated sigmoid map: not '1.09e-33..1'.
    (-1e-9, 0.5, ('0.00', '0.50')),  # No '-0.00'.
    (0.0012, 0.0051, ('0.0012', '0.0051')),  # An attention row over a 14x14 map.
    (0.9987, 0.9999, ('0.9987', '0.9999')),  # A narrow range keeps its digits.
    (0.25, 0.25, ('0.25', '0.25')),  # A constant map: its value.
    (3.2e-7, 5.1e-6, ('3.2e-07', '5.1e-06')),  # Tiny ranges in scientific notation,
    (1e-33, 2e-6, ('0', '2.0e-06')),  # with residues far below them shown as 0.
    (12.3, 1234.5, ('12', '1234')),
    (0.0, 0.0, ('0', '0')),
    (float('nan'), 1.0, ('nan', '1')),  # A diverged model, shown as it is.
])
def test_range_labels_are_readable(low, high, labels):
  assert figures.range_labels(low, high) == labels
  assert figures.format_range(low, high) == '..'.join(labels)


def test_a_wrong_prediction_is_titled_in_words_and_in_red():
  assert figures.figure_title('image 3', 'wren', 0.934, 'finch') == (
      'image 3: WRONG: predicted wren (0.93), true finch', figures.WRONG_COLOUR)
  assert figures.figure_title('image 3', 'wren', 0.934, 'wren') == (
      'image 3: predicted wren (0.93), true wren', figures.TITLE_COLOUR)
  assert figures.figure_title('x.jpg', 'wren', 0.5) == (
      'x.jpg: predicted wren (0.50)', figures.TITLE_COLOUR)  # True class unknown.


def test_figures_mark_wrong_predictions_and_carry_a_colour_bar_per_map():
  outputs = _cross_attention_outputs()  # Predicted: classes 2 and 3.
  images = np.stack([_grey_image()] * 2)
  right, wrong = figures.attention_figures(images, np.array([2, 0]), outputs,
                                           ['a', 'b', 'c', 'd'], MIDS, (0.5, 0.5))
  assert not has_red_title(right) and has_red_title(wrong)
  assert title_band(right).min() < 100  # The black title is there.
  unknown = figures.attention_figures(images[:1], [None], outputs, 'abcd', MIDS, (0.5, 0.5),
                                      names=['x.jpg'])[0]
  assert not has_red_title(unknown)
  for index in range(6):
    left, top, right_end, bottom = figures.colour_bar_box(index, 6)
    bar = wrong[(top + bottom) // 2, left + 2:right_end - 2].astype(int)
    if index == 0:  # The input: no colour bar.
      assert (bar == 255).all()
    else:  # 'jet' from dark blue (the panel's min) to dark red (its max).
      assert bar[0, 2] > 100 and bar[0, 0] < 50 and bar[-1, 0] > 100 and bar[-1, 2] < 50


def test_global_context_panels_show_the_pooling_weights_without_a_query():
  weights = {'layer2': _hot((4,), 3), 'layer3': _hot((4,), 0)}  # Top cells (1, 1), (0, 0).
  clsa = {n: m[0] for n, m in _cross_attention_outputs()['clsa'].items()}
  panels = figures.example_panels(_grey_image(), clsa, weights, MIDS, (0.5, 0.5),
                                    clca_kind='global_context')
  assert [p.title for p in panels][-2:] == ['CLCA layer2 pooling weights',
                                            'CLCA layer3 pooling weights']
  assert all(p.marker is None for p in panels)
  _assert_hot_exactly(panels[4].pixels, _hot_block((2, 2), (1, 1)))
  _assert_hot_exactly(panels[5].pixels, _hot_block((2, 2), (0, 0)))
  figure = figures.attention_figures(
      _grey_image()[None], np.array([0]), {'logits': np.zeros((1, 4)), 'clca': {
          n: w[None] for n, w in weights.items()}}, 'abcd', MIDS, (0.5, 0.5),
      clca_kind='global_context')[0]
  assert figure.shape[1] == round(3 * figures.PANEL_INCHES * figures.DPI)  # No CLSA.


def test_models_without_attention_maps_are_a_clear_error(tmp_path):
  config = default.get_config()
  config.model.name = 'resnet'
  with pytest.raises(UserError, match="model.name='resnet' has no attention maps"):
    visualize_run(config, str(tmp_path))
  config.model.update(name='clan', use_clsa=False, use_clca=False)
  with pytest.raises(UserError, match='use_clsa and model.use_clca are both False'):
    visualize_run(config, str(tmp_path))
  run = types.SimpleNamespace(config=config)
  assert attention.training_figures(run) is None  # Training goes on without figures.
  config.visualize.after_training = True
  assert attention.write_final_figures(run, variables=None, step=1) == []  # Nor PNGs.


def test_after_training_must_be_a_bool():
  visualize = types.SimpleNamespace(**default.get_visualize_config().to_dict())
  validate_visualize_config(visualize)
  visualize.after_training = 'yes'  # A ConfigDict refuses it already; a plain section not.
  with pytest.raises(ConfigError, match="visualize.after_training='yes' is invalid; it must be"):
    validate_visualize_config(visualize)


def test_visualize_mode_writes_one_png_per_image(trained_synthetic_workdir):
  from PIL import Image

  workdir = trained_synthetic_workdir
  # No --config: the run's config.json.
  result = subprocess.run(
      [sys.executable, 'main.py', f'--workdir={workdir}', '--mode=visualize'], cwd=REPO_ROOT,
      env=cli_environment(workdir.parent), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  directory = workdir / 'visualizations' / f'step_{TRAINED_SYNTHETIC_STEPS}'  # The latest.
  assert sorted(os.listdir(directory)) == ['image_0.png', 'image_1.png']
  assert str(directory) in result.stdout
  with Image.open(directory / 'image_0.png') as image:
    assert image.mode == 'RGB' and image.width == round(6 * figures.PANEL_INCHES *
                                                        figures.DPI)


def test_training_writes_the_figures_to_tensorboard_at_each_evaluation(
    trained_synthetic_workdir):
  import tensorflow as tf

  steps, sizes = {}, set()
  for path in glob.glob(str(trained_synthetic_workdir / 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == 'images':
          steps.setdefault(value.tag, set()).add(event.step)
          width, height = tf.make_ndarray(value.tensor)[:2]  # Then the PNG bytes.
          sizes.add((int(width), int(height)))
  evaluated = set(TRAINED_SYNTHETIC_EVAL_STEPS)
  assert steps == {'attention/image_0': evaluated, 'attention/image_1': evaluated}
  assert len(sizes) == 1 and sizes.pop()[0] == round(6 * figures.PANEL_INCHES * figures.DPI)
  log = (trained_synthetic_workdir.parent / 'train.log').read_text()
  assert 'eval @ step 20: fused top-1' in log and 'Got images' not in log  # The figures' shapes.


def test_after_training_writes_the_trained_models_figures_as_pngs(
    trained_synthetic_workdir, tmp_path, capsys):
  from PIL import Image

  # A copy: the shared workdir stays read-only. Trained to the end but without its results
  # (killed before they were written), so train_and_evaluate restores, evaluates and draws.
  workdir = tmp_path / 'workdir'
  shutil.copytree(trained_synthetic_workdir, workdir, ignore=shutil.ignore_patterns(
      'visualizations', 'events.out.*', 'eval_results.json'))
  config = load_config_file(workdir / 'tiny_config.py')
  config.visualize.update(after_training=True, every_eval=False)
  train_and_evaluate(config, str(workdir))
  directory = workdir / 'visualizations' / f'step_{TRAINED_SYNTHETIC_STEPS}'
  assert sorted(os.listdir(directory)) == ['image_0.png', 'image_1.png']
  out = capsys.readouterr().out
  assert f'wrote 2 attention figures of the trained model (step {TRAINED_SYNTHETIC_STEPS}) to ' \
      f'{directory}' in out
  # Then where the outputs are and the next commands for this workdir.
  assert out.split('image_0.png..image_1.png\n')[1].startswith(f'outputs in {workdir}: ')
  assert f'tensorboard --logdir={workdir}' in out.splitlines()[-2]
  with Image.open(directory / 'image_1.png') as image:
    assert image.mode == 'RGB' and image.width == round(6 * figures.PANEL_INCHES *
                                                        figures.DPI)
