"""clan_jax/inference/model_source.py: one way to get a model's variables for inference, from a
run's checkpoint, a variables checkpoint or a PyTorch file, with one set of messages."""

import types

import jax
import numpy as np
import pytest

from clan_jax.base.errors import CheckpointError, UserError
from clan_jax.convert import abstract_variables, flax_to_torch_arrays
from clan_jax.inference import model_source
from clan_jax.models import create_model
from clan_jax.train.checkpoints import save_variables

IMAGE_SIZE = 32
DEVICE = jax.sharding.SingleDeviceSharding(jax.devices()[0])


@pytest.fixture(scope='module')
def resnet18():
  """A ResNet-18 classifier with 3 classes and random variables."""
  model = create_model(dict(name='resnet', depth=18, mid_stages=(2, 3), use_clca=False,
                            use_clsa=False, clca_kind='cross_attention', clca_dim=16,
                            clca_heads=1, head_dim=16, fusion='sum',
                            head_loss_weights={'top': 1.0, 'mid': 1.0, 'concat': 1.0},
                            dtype='float32', conv1x1_as_matmul=True, attention_impl='auto',
                            clca_order='auto', remat=False), 3)
  # Random values of the right shapes: shape inference only, no initialisation to run.
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype),
                           dict(abstract_variables(model, IMAGE_SIZE)))
  return model, variables


def _load(choice, model, **kwargs):
  return model_source.load_inference_variables(choice, model, image_size=IMAGE_SIZE,
                                               sharding=DEVICE, **kwargs)


def _assert_same(loaded, expected):
  assert jax.tree.structure(dict(loaded)) == jax.tree.structure(dict(expected))
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_a_variables_checkpoint_and_a_torch_file_give_the_same_variables(resnet18, tmp_path):
  from safetensors.numpy import save_file

  model, variables = resnet18
  folder = save_variables(variables, tmp_path / 'variables')
  from_folder = _load(folder, model)
  assert (from_folder.source, from_folder.step) == ('variables', 0)
  _assert_same(from_folder.variables, variables)
  save_file(flax_to_torch_arrays(variables), str(tmp_path / 'model.safetensors'))
  from_torch = _load(str(tmp_path / 'model.safetensors'), model)
  assert from_torch.source == 'torch'
  _assert_same(from_torch.variables, variables)
  assert jax.tree.leaves(from_torch.variables)[0].sharding == DEVICE


def test_a_variables_checkpoint_of_another_model_names_every_mismatch(resnet18, tmp_path):
  model, variables = resnet18
  other = {'params': {**variables['params'], 'extra': {'kernel': np.zeros(2, np.float32)}},
           'batch_stats': variables['batch_stats']}
  folder = save_variables(other, tmp_path / 'other')
  with pytest.raises(CheckpointError, match=r"does not fit the model:\n.*\['extra'\]"):
    _load(folder, model)


@pytest.mark.parametrize('choice, message', [
    ('', '--checkpoint is empty'),
    ('no/such/folder', 'no such checkpoint folder, and not a PyTorch file'),
])
def test_bad_choices_are_messages(choice, message):
  with pytest.raises(UserError, match=message):
    model_source.check_checkpoint_choice(choice)


def test_a_workdir_without_checkpoints_says_what_to_do(resnet18, tmp_path):
  with pytest.raises(CheckpointError, match=r'no checkpoint in .*checkpoints \(no such folder\); '
                     r'train first .*or give --checkpoint=PATH'):
    _load('latest', resnet18[0], workdir=str(tmp_path))


@pytest.mark.parametrize('checkpoint, torch_file, backbone_only, expected', [
    (None, '', True, 'latest'),
    # An ImageNet backbone initialises training; it is never the model to evaluate.
    (None, 'resnet50.pth', True, 'latest'),
    (None, 'clan_cub.pth', False, 'clan_cub.pth'),  # A whole model given for evaluation.
    ('best', 'clan_cub.pth', False, 'best'),  # --checkpoint wins.
    ('run/model.safetensors', '', True, 'run/model.safetensors'),
])
def test_what_eval_and_visualize_read(checkpoint, torch_file, backbone_only, expected):
  config = types.SimpleNamespace(init=types.SimpleNamespace(
      torch_checkpoint=torch_file, torch_backbone_only=backbone_only))
  assert model_source.evaluation_choice(config, checkpoint) == expected
