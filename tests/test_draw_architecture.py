"""The architecture picture: its shapes are the model's, its labels do not collide."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from clan_jax.convert import abstract_variables
from clan_jax.models import create_model
from configs import default
from helpers.commands import run_cli
from scripts import draw_architecture

SIZE, CLASSES = 64, 10


def small_config(**overrides):
  model = default.get_model_config()
  model.update({'depth': 18, 'head_dim': 32, 'clca_dim': 16, **overrides})
  return model


def model_shapes(model_config) -> tuple[dict, dict]:
  """The shapes straight from the model: its stage features and its outputs."""
  model = create_model(model_config, CLASSES)
  variables = abstract_variables(model, SIZE)
  images = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
  shape_of = lambda tree: jax.tree.map(lambda a: tuple(a.shape), tree)
  features = jax.eval_shape(lambda v, x: model.apply(v, x, method='features'), variables, images)
  outputs = jax.eval_shape(lambda v, x: model.apply(v, x, return_attention=True),
                           variables, images)
  return shape_of(features), shape_of(outputs)


def test_the_picture_is_written_with_the_shapes_of_the_model(tmp_path):
  config = small_config()
  output = tmp_path / 'images' / 'architecture.png'
  shapes = draw_architecture.write_picture(config, CLASSES, SIZE, output)

  with Image.open(output) as image:
    width, height = image.size
  assert 1200 <= width <= 2400 and 600 <= height <= 1200, image.size
  assert 10_000 < output.stat().st_size < 300_000
  features, outputs = model_shapes(config)
  for name, shape in features.items():
    assert shapes[name] == shape, name
  for head, shape in outputs['heads'].items():
    assert shapes[f'heads/{head}'] == shape, head
  for name in ('layer2', 'layer3'):
    assert shapes[f'clca/{name}'] == outputs['clca'][name]
    assert shapes[f'clsa/{name}'] == outputs['clsa'][name]
    assert shapes[f'refined/{name}'] == features[name]  # CLCA keeps the shape.
    assert shapes[f'z/{name}'] == (1, 32)
  assert shapes['clsa/fused'] == outputs['clsa']['fused']
  assert shapes['logits'] == outputs['logits'] == (1, CLASSES)
  assert shapes['input'] == (1, SIZE, SIZE, 3)
  assert shapes['stem'] == (1, SIZE // 4, SIZE // 4, 64)
  assert shapes['top_refined'] == features['layer4']
  assert shapes['gap_top'] == (1, 512)
  assert shapes['concat_in'] == (1, 512 + 2 * 32)


def test_ablations_and_other_mid_maps_draw_without_collisions(tmp_path):
  config = small_config(clca_kind='global_context', mid_stages=(1, 3), use_clsa=False)
  shapes = draw_architecture.write_picture(config, CLASSES, SIZE, tmp_path / 'a.png')
  _, outputs = model_shapes(config)
  assert shapes['clca/layer1'] == outputs['clca']['layer1'] == (1, (SIZE // 32) ** 2)
  assert shapes['clca_context/layer1'] == (1, 512)  # c: T's channels.
  assert 'clsa/fused' not in shapes and 'clsa' not in outputs
  config = small_config(use_clca=False, fusion='top')
  shapes = draw_architecture.write_picture(config, CLASSES, SIZE, tmp_path / 'b.png')
  assert not any(key.startswith('clca/') for key in shapes)
  assert (tmp_path / 'a.png').stat().st_size > 0 and (tmp_path / 'b.png').stat().st_size > 0


def test_the_layout_check_finds_overlaps_and_labels_outside_their_box():
  diagram = draw_architecture.Diagram(4.0, 2.0)
  diagram.box(draw_architecture.Box(1.0, 1.0, 0.5, 0.5), 'a title far wider than its box', '',
              'backbone')
  diagram.label(1.0, 1.0, 'a label on it')
  diagram.label(3.0, 1.9, 'past the top', va='bottom')
  diagram.figure.canvas.draw()
  problems = draw_architecture.layout_problems(diagram)
  assert "'a title far wider than its box' leaves its box" in problems
  assert "'a label on it' covers another box" in problems
  assert "'past the top' leaves the picture" in problems
  assert any('overlaps' in problem for problem in problems)


def test_cli_writes_the_picture_and_refuses_the_plain_resnet(tmp_path):
  output = tmp_path / 'architecture.png'
  result = run_cli('scripts/draw_architecture.py', '--config.model.depth=18',
                   f'--image_size={SIZE}', f'--output={output}')
  assert output.stat().st_size > 10_000 and str(output) in result.stdout
  result = run_cli('scripts/draw_architecture.py', '--config.model.name=resnet',
                   f'--output={tmp_path / "resnet.png"}', check_returncode=2)
  assert 'model.name=' in result.stderr and 'Traceback' not in result.stderr
  assert not (tmp_path / 'resnet.png').exists()
  assert np.all(np.asarray(Image.open(output).convert('RGB'))[0, 0] == 255)  # White.
