"""clan_jax.train.evaluation and steps.eval_step: eval.flip (the mirror's logits averaged, per
head and fused) and eval_results.json's protocol (checkpoint, crop, dtype, selection)."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clan_jax.datasets.preprocess import normalize
from clan_jax.models import cross_entropy
from clan_jax.train import evaluation, steps
from configs import default

CLASSES = 5


class TwoHeads(nn.Module):
  """A position-dependent stand-in for CLAN: two heads on the flattened image, fused by 'sum'
  (a mirror changes its logits, unless the image is its own mirror)."""

  @nn.compact
  def __call__(self, images, train=False):
    flat = images.reshape(images.shape[0], -1)
    heads = {'top': nn.Dense(CLASSES, name='top')(flat),
             'concat': nn.Dense(CLASSES, name='concat')(jnp.tanh(flat))}
    return {'logits': heads['top'] + heads['concat'], 'heads': heads}


@pytest.fixture(scope='module')
def model_and_variables():
  model = TwoHeads()
  images = jnp.zeros((1, 6, 8, 3))
  return model, model.init(jax.random.PRNGKey(0), images)


def batch_of(images):
  images = np.asarray(images, np.uint8)
  return {'image': images, 'label': np.arange(len(images)) % CLASSES,
          'mask': np.ones(len(images), bool)}


def eval_step(model, variables, batch, flip):
  return jax.jit(lambda v, b: steps.eval_step(model, v, b, flip))(variables, batch)


def test_flip_averages_each_heads_logits_with_the_mirrors(model_and_variables):
  model, variables = model_and_variables
  images = np.random.default_rng(0).integers(0, 256, (4, 6, 8, 3))
  batch = batch_of(images)
  flipped = eval_step(model, variables, batch, flip=True)
  plain = model.apply(variables, normalize(jnp.asarray(batch['image'])))
  mirror = model.apply(variables, normalize(jnp.asarray(batch['image'][:, :, ::-1])))
  labels = jnp.asarray(batch['label'])
  for head in ('fused', 'top', 'concat'):
    pick = (lambda out: out['logits']) if head == 'fused' else (lambda out: out['heads'][head])
    mean = (pick(plain) + pick(mirror)) / 2
    expected_loss = jax.vmap(lambda l, y: cross_entropy(l[None], y[None]))(mean, labels)
    np.testing.assert_allclose(flipped[f'loss/{head}'], expected_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(flipped[f'top1/{head}'], jnp.argmax(mean, -1) == labels)
  mean_fused = (plain['logits'] + mirror['logits']) / 2
  np.testing.assert_array_equal(flipped['pred'], jnp.argmax(mean_fused, -1))
  # The mirror changes this model's logits: the average is not the plain image's.
  unflipped = eval_step(model, variables, batch, flip=False)
  assert not np.allclose(unflipped['loss/fused'], flipped['loss/fused'])


def test_flip_of_an_image_that_is_its_own_mirror_changes_nothing(model_and_variables):
  model, variables = model_and_variables
  half = np.random.default_rng(1).integers(0, 256, (3, 6, 4, 3))
  symmetric = np.concatenate([half, half[:, :, ::-1]], axis=2)  # Mirrored along the width.
  assert not np.array_equal(symmetric, symmetric[:, ::-1])  # Not along the height.
  batch = batch_of(symmetric)
  flipped = eval_step(model, variables, batch, flip=True)
  plain = eval_step(model, variables, batch, flip=False)
  assert set(flipped) == set(plain)
  for name in plain:
    np.testing.assert_allclose(np.asarray(flipped[name], np.float64),
                               np.asarray(plain[name], np.float64), rtol=1e-5, atol=1e-6)


def fake_run(flip=False, dtype='float32', model_name='clan', val_split=''):
  config = default.get_config()
  config.eval.flip = flip
  config.model.name = model_name
  config.dataset.update(eval_split='test', crop_size=64)
  return types.SimpleNamespace(config=config, dtype=dtype, val_split=val_split)


def test_protocol_names_the_checkpoint_crop_fusion_and_dtype():
  assert evaluation.protocol(fake_run(), 'final', 12) == {
      'split': 'test', 'checkpoint': 'final', 'step': 12, 'crop': 'center', 'image_size': 64,
      'fusion': 'sum', 'dtype': 'float32'}
  flipped = evaluation.protocol(fake_run(True, 'bfloat16', 'resnet'), 'torch', 0)
  assert (flipped['crop'], flipped['dtype'], flipped['fusion']) == ('center+flip', 'bfloat16',
                                                                     'none')


def test_training_selects_on_the_validation_split_when_there_is_one():
  assert evaluation.training_selection(fake_run(val_split='train[90%:]')) == {
      'selected_on': 'train[90%:] split top-1', 'selection_split': 'validation'}
  assert evaluation.training_selection(fake_run()) == {
      'selected_on': 'test split top-1', 'selection_split': 'eval'}


def test_a_checkpoints_selection_is_read_from_its_meta_or_was_its_eval_split():
  recorded = {'selected_on': 'val split top-1', 'selection_split': 'validation'}
  meta = {'step': 8, 'eval': {'split': 'test', 'top1': 0.5}, 'selection': recorded}
  assert evaluation.checkpoint_selection(meta, 'other') == recorded
  before = {'step': 8, 'eval': {'split': 'test2', 'top1': 0.5}}  # Written before selections.
  assert evaluation.checkpoint_selection(before, 'test') == {
      'selected_on': 'test2 split top-1', 'selection_split': 'eval'}


def test_the_result_line_puts_the_fused_top1_beside_chance():
  results = {'fused': {'top1': 0.9675, 'top5': 0.9975, 'loss': 0.1234},
             'per_class_top1': [1.0] * 20, 'num_examples': 1200,
             'protocol': {'split': 'test', 'fusion': 'sum', 'checkpoint': 'best', 'step': 300,
                          'crop': 'center', 'dtype': 'float32',
                          'selected_on': 'test split top-1', 'selection_split': 'eval'}}
  assert evaluation.result_line(results) == (
      'test top-1 (fused: sum): 0.9675 (chance 0.0500: 20 classes), top-5 0.9975, loss 0.1234 '
      'on 1,200 images (checkpoint best, step 300, chosen on the test split top-1; center '
      'crop, float32)')
