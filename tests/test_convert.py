"""Weight conversion and numerical parity of the Flax ResNet with the PyTorch twin.

Every parameter and BN statistic is randomised (tests/helpers/torch_helpers.py). float64 proves
the algorithm (agreement ~1e-13); float32 checks are relative to the output's scale.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from clan_jax.convert import flax_to_torch, flax_to_torch_arrays, torch_to_flax
from clan_jax.base.errors import CheckpointError
from clan_jax.models import create_model
from clan_jax.pytorch.twin import create_torch_model
from helpers.torch_helpers import (assert_close_to_scale, numpy_state_dict, randomize_, to_nchw,
                           to_nhwc)

NUM_CLASSES = 10
IMAGE_SIZE = 64


def _pair(config, depth, dtype, seed=0):
  """A randomised twin and the converted Flax model and variables, in `dtype`."""
  config.depth = depth
  twin = randomize_(create_torch_model(config, NUM_CLASSES), seed).to(dtype)
  model = create_model(config, NUM_CLASSES)
  variables = torch_to_flax(numpy_state_dict(twin), model, image_size=IMAGE_SIZE)
  return twin, model, variables


def _images(dtype, seed=0, batch=2):
  return np.random.default_rng(seed).standard_normal((batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(
      dtype)


def _eval_outputs(twin, model, variables, images):
  twin.eval()
  with torch.no_grad():
    expected = {'logits': twin(to_nchw(images))['logits'].numpy(),
                **{k: to_nhwc(v) for k, v in twin.features(to_nchw(images)).items()}}
  actual = {'logits': model.apply(variables, images)['logits'],
            **model.apply(variables, images, method='features')}
  return expected, actual


def _train_step_outputs(twin, model, variables, images, labels):
  """Logits, updated running statistics and cross-entropy gradients in train mode."""
  twin.train()
  twin.zero_grad()
  logits = twin(to_nchw(images))['logits']
  torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()
  expected = {'logits': logits.detach().numpy(),
              'stats': {k: v.numpy() for k, v in twin.state_dict().items()
                        if k.endswith(('running_mean', 'running_var'))},
              'grads': {k: p.grad.numpy() for k, p in twin.named_parameters()}}

  def loss_fn(params):
    outputs, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                   images, train=True, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(outputs['logits'], labels).mean()
    return loss, (outputs['logits'], updates)

  (_, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
  actual = {'logits': logits,
            'stats': flax_to_torch_arrays({'batch_stats': updates['batch_stats']}),
            'grads': flax_to_torch_arrays({'params': grads})}
  return expected, actual


@pytest.mark.parametrize('depth', [18, 50])
def test_float64_eval_train_and_gradients_agree_to_1e_10(resnet_config, depth):
  with jax.enable_x64(True):
    twin, model, variables = _pair(resnet_config, depth, torch.float64)
    images = _images(np.float64)
    expected, actual = _eval_outputs(twin, model, variables, images)
    for name in expected:
      assert_close_to_scale(expected[name], actual[name], 1e-10, name)
    labels = np.array([3, 7])
    expected, actual = _train_step_outputs(twin, model, variables, images, labels)
    assert_close_to_scale(expected['logits'], actual['logits'], 1e-10, 'train logits')
    assert set(expected['stats']) == set(actual['stats'])
    for name in expected['stats']:
      assert_close_to_scale(expected['stats'][name], actual['stats'][name], 1e-10, name)
    assert set(expected['grads']) == set(actual['grads'])
    for name in expected['grads']:
      assert_close_to_scale(expected['grads'][name], actual['grads'][name], 1e-9, name)


@pytest.mark.parametrize('depth', [18, 34, 50, 101, 152])
def test_float32_outputs_within_1e_5_of_scale(resnet_config, depth):
  twin, model, variables = _pair(resnet_config, depth, torch.float32, seed=depth)
  expected, actual = _eval_outputs(twin, model, variables, _images(np.float32, depth))
  for name in expected:
    assert_close_to_scale(expected[name], actual[name], 1e-5, name)


def test_float32_resnet18_train_mode_and_gradients_within_1e_4(resnet_config):
  twin, model, variables = _pair(resnet_config, 18, torch.float32, seed=5)
  expected, actual = _train_step_outputs(twin, model, variables, _images(np.float32, 5),
                                         np.array([1, 9]))
  assert_close_to_scale(expected['logits'], actual['logits'], 1e-5, 'train logits')
  for name in expected['stats']:
    assert_close_to_scale(expected['stats'][name], actual['stats'][name], 1e-5, name)
  for name in expected['grads']:
    assert_close_to_scale(expected['grads'][name], actual['grads'][name], 1e-4, name)


def test_torch_to_flax_to_torch_is_exact_and_loads_strictly(resnet_config, torchvision_shapes):
  resnet_config.depth = 50
  twin = randomize_(create_torch_model(resnet_config, 1000), 1)
  state_dict = numpy_state_dict(twin)
  model = create_model(resnet_config, 1000)
  back = flax_to_torch(torch_to_flax(state_dict, model), model)
  assert set(back) == set(torchvision_shapes['resnet50'])  # num_batches_tracked included.
  for key, array in state_dict.items():
    assert back[key].dtype == torch.float32
    np.testing.assert_array_equal(back[key].numpy(), array, err_msg=key)
  fresh = create_torch_model(resnet_config, 1000)
  fresh.load_state_dict(back, strict=True)


def test_backbone_only_loads_the_backbone_and_initialises_the_classifier(
    resnet_config, tmp_path, torchvision_shapes):
  """From an ImageNet file of each origin: torchvision's IMAGENET1K_V2 (resnet50-11ad3fa6.pth)
  and timm's plain ResNets (model.safetensors on the Hugging Face hub) have V1's key names
  (torchvision/models/resnet.py; timm/models/resnet.py), so they load through one path."""
  from safetensors.torch import save_file

  from clan_jax.convert import load_torch_checkpoint

  imagenet = randomize_(create_torch_model(resnet_config, 1000), 2).state_dict()
  assert {k: list(v.shape) for k, v in imagenet.items()} == torchvision_shapes['resnet18']
  torch.save(imagenet, tmp_path / 'resnet18-v2.pth')
  save_file(imagenet, str(tmp_path / 'model.safetensors'), metadata={'format': 'pt'})
  # A model held as `self.model` (PyTorch Lightning) saves every key with 'model.'.
  save_file({f'model.{k}': v for k, v in imagenet.items()},
            str(tmp_path / 'lightning.safetensors'))
  state_dict = {k: v.numpy() for k, v in imagenet.items()
                if not k.endswith('num_batches_tracked')}
  for name in ('resnet18-v2.pth', 'lightning.safetensors', 'model.safetensors'):
    loaded_file = load_torch_checkpoint(tmp_path / name)
    assert set(loaded_file) == set(state_dict), name
    for key, array in state_dict.items():
      np.testing.assert_array_equal(loaded_file[key], array, err_msg=f'{name}: {key}')
  state_dict = loaded_file  # One conversion stands for the three (the same arrays).
  model = create_model(resnet_config, NUM_CLASSES)
  rng = jax.random.PRNGKey(3)
  variables = torch_to_flax(state_dict, model, image_size=IMAGE_SIZE, backbone_only=True,
                            rng=rng)
  loaded = flax_to_torch_arrays(variables)
  for key in state_dict:
    if not key.startswith('fc.'):
      np.testing.assert_array_equal(loaded[key], state_dict[key], err_msg=key)
  fresh = model.init(rng, jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)), train=False)
  assert loaded['fc.weight'].shape == (NUM_CLASSES, 512)
  np.testing.assert_array_equal(variables['params']['fc']['kernel'],
                                fresh['params']['fc']['kernel'])
  with pytest.raises(CheckpointError, match=r'fc.weight: checkpoint \(1000, 512\), model '
                     r'\(10, 512\)[\s\S]*backbone_only=True[\s\S]*'
                     r'--config.init.torch_backbone_only=True'):
    torch_to_flax(state_dict, model)


def test_mismatches_are_reported_together_by_key(resnet_config):
  state_dict = numpy_state_dict(create_torch_model(resnet_config, NUM_CLASSES))
  del state_dict['layer1.0.conv1.weight']
  state_dict['extra.weight'] = np.zeros(3, np.float32)
  state_dict['bn1.weight'] = np.zeros(65, np.float32)
  state_dict['module.layer4.1.bn2.bias'] = state_dict.pop('layer4.1.bn2.bias')  # Stripped.
  with pytest.raises(CheckpointError) as error:
    torch_to_flax(state_dict, create_model(resnet_config, NUM_CLASSES))
  message = str(error.value)
  assert '1 missing: layer1.0.conv1.weight' in message
  assert '1 unexpected: extra.weight' in message
  assert '1 wrong shape: bn1.weight: checkpoint (65,), model (64,)' in message
  assert 'layer4.1.bn2.bias' not in message


def test_flax_to_torch_checks_variables_against_the_model(resnet_config):
  model = create_model(resnet_config, NUM_CLASSES)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
  resnet_config.depth = 34
  with pytest.raises(CheckpointError, match='missing: layer1.2.bn1.bias'):
    flax_to_torch(variables, create_model(resnet_config, NUM_CLASSES))


def test_command_line_writes_a_variables_checkpoint_and_never_overwrites(
    tmp_path, resnet18_pth):
  from clan_jax.train.checkpoints import load_variables_checkpoint
  from helpers.commands import run_cli

  output = tmp_path / 'converted'
  args = ['-m', 'clan_jax.convert', f'--torch_checkpoint={resnet18_pth}',
          '--config=configs/default.py', '--config.model.name=resnet', '--config.model.depth=18',
          f'--output={output}']
  written = run_cli(*args)
  # Orbax's ~40 routine INFO lines per save are dropped (quiet.quiet_library_logs).
  assert 'orbax' not in written.stderr, written.stderr
  restored = load_variables_checkpoint(output)
  assert set(restored) == {'params', 'batch_stats'}
  expected = numpy_state_dict_from_file(resnet18_pth)
  converted = flax_to_torch_arrays(restored)
  assert set(converted) == set(expected)
  for key in expected:
    np.testing.assert_array_equal(converted[key], expected[key], err_msg=key)
  again = run_cli(*args, check_returncode=2)
  assert 'already exists; it is never overwritten' in again.stderr
  assert 'Traceback' not in again.stderr
  depth34 = run_cli(*args[:-2], '--config.model.depth=34', f'--output={tmp_path / "d34"}',
                    check_returncode=2)
  assert 'missing: layer1.2.bn1.bias' in depth34.stderr and 'Traceback' not in depth34.stderr
  assert not (tmp_path / 'd34').exists()


def numpy_state_dict_from_file(path):
  return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()
          if not k.endswith('num_batches_tracked')}


def test_command_line_loads_an_imagenet_backbone_into_clan(tmp_path, resnet18_pth):
  from clan_jax.train.checkpoints import load_variables_checkpoint
  from helpers.commands import run_cli

  args = ['-m', 'clan_jax.convert', f'--torch_checkpoint={resnet18_pth}',
          '--config=configs/default.py', '--config.model.depth=18',
          '--config.model.clca_dim=32', '--config.model.head_dim=16', '--backbone_only']
  no_classes = run_cli(*args, f'--output={tmp_path / "a"}', check_returncode=2)
  assert 'pass --num_classes=K' in no_classes.stderr
  run_cli(*args, '--num_classes=5', f'--output={tmp_path / "clan"}')
  converted = flax_to_torch_arrays(load_variables_checkpoint(tmp_path / 'clan'))
  expected = numpy_state_dict_from_file(resnet18_pth)
  assert converted['heads.concat.weight'].shape == (5, 512 + 2 * 16)
  assert 'clca.layer2.query.weight' in converted and 'clsa.layer3.weight' in converted
  for key, array in expected.items():
    if not key.startswith('fc.'):
      np.testing.assert_array_equal(converted[key], array, err_msg=key)


# Files in other layouts than torchvision's: named in the error.

def _small_clan(resnet_config):
  resnet_config.update(name='clan', clca_dim=16, head_dim=16)
  return create_model(resnet_config, 5)


def test_clan_r50_backbone_has_the_imagenet_r50_layout(resnet_config, torchvision_shapes):
  """Shapes only: every ResNet-50 ImageNet file (V1, V2, timm's) fits CLAN-R50's backbone."""
  from clan_jax.pytorch.conversion import abstract_variables, key_table

  resnet_config.depth = 50
  table = key_table(abstract_variables(_small_clan(resnet_config), IMAGE_SIZE))
  backbone = {k: list(shape) for k, (_, _, shape) in table.items()
              if k.split('.')[0] in ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4')}
  imagenet = {k: v for k, v in torchvision_shapes['resnet50'].items()
              if not k.startswith('fc.') and not k.endswith('num_batches_tracked')}
  assert backbone == imagenet


def _renamed(shapes, rename):
  """A state_dict of zeros with torchvision's names and shapes, renamed."""
  return {rename(k): np.zeros(shape, np.float32) for k, shape in shapes.items()}


@pytest.mark.parametrize('rename, message', [
    (lambda k: k.replace('conv1.weight', 'conv1.0.weight') if k == 'conv1.weight' else k,
     re.escape('The file is a timm ResNet with a deep stem (resnet50d')),
    (lambda k: 'resnet.embedder.' + k, 'The file is a Hugging Face transformers ResNet'),
    (lambda k: 'backbone.' + k, re.escape(
        "Every key of the file begins with 'backbone.': it holds the ResNet inside another "
        "module; save that module's own state_dict (e.g. model.backbone.state_dict())")),
    (lambda k: k.replace('.', '_'), 'No key of the file is a torchvision ResNet name '
     r'\(conv1.weight, .*its first keys: conv1_weight, bn1_weight'),
])
def test_foreign_layouts_are_named(resnet_config, torchvision_shapes, rename, message):
  model = _small_clan(resnet_config)
  for backbone_only in (True, False):
    with pytest.raises(CheckpointError, match=message) as error:
      torch_to_flax(_renamed(torchvision_shapes['resnet18'], rename), model,
                    image_size=IMAGE_SIZE, backbone_only=backbone_only)
  assert ' more)' in str(error.value)  # Hundreds of keys: the first 20 of each kind.


# Export: a trained workdir -> the twin's state_dict.

@pytest.mark.xdist_group('trained_synthetic')
def test_a_trained_workdir_exports_a_state_dict_the_twin_loads_with_the_same_logits(
    trained_synthetic_workdir, tmp_path):
  import subprocess
  import sys

  from safetensors import safe_open
  from safetensors.torch import load_file

  from clan_jax.datasets.preprocess import normalize
  from clan_jax.inference.predictor import predictor_from_workdir
  from clan_jax.pytorch.conversion import save_state_dict
  from helpers.commands import REPO_ROOT, cli_environment
  from helpers.trained_model import synthetic_test_image

  output = tmp_path / 'clan.safetensors'
  command = [sys.executable, '-m', 'clan_jax.convert', f'--workdir={trained_synthetic_workdir}',
             '--checkpoint=best', f'--output={output}']
  env = cli_environment(trained_synthetic_workdir.parent)
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with safe_open(str(output), framework='np') as f:
    metadata = f.metadata()
  classes = json.loads(metadata['clan_jax.classes'])
  twin = create_torch_model(twin_config(metadata), len(classes))
  state_dict = load_file(output)
  twin.load_state_dict(state_dict, strict=True)  # Every key, BatchNorm counters included.
  twin.eval()
  predictor = predictor_from_workdir(str(trained_synthetic_workdir), 'best')
  assert classes == predictor.class_names
  images = np.asarray(normalize(np.stack([synthetic_test_image(trained_synthetic_workdir, i)[0]
                                          for i in (0, 5)])), np.float32)
  expected = np.asarray(predictor.model.apply(predictor.variables, images)['logits'])
  with torch.no_grad():
    actual = twin(to_nchw(images))['logits'].numpy()
  assert_close_to_scale(expected, actual, 1e-5, 'exported logits')
  # A .pth holds the same tensors, for torch.load(weights_only=True).
  pth = save_state_dict({k: v.numpy() for k, v in state_dict.items()}, tmp_path / 'clan.pth')
  from_pth = torch.load(pth, weights_only=True)
  create_torch_model(twin_config(metadata), len(classes)).load_state_dict(from_pth, strict=True)
  for key, tensor in state_dict.items():
    assert torch.equal(from_pth[key], tensor), key


def twin_config(metadata):
  import ml_collections

  return ml_collections.ConfigDict(json.loads(metadata['clan_jax.model']))


def test_export_refuses_a_wrong_output_and_flags_of_the_other_direction(tmp_path):
  from clan_jax.base.errors import UserError
  from clan_jax.pytorch.conversion import check_state_dict_output, save_state_dict
  from helpers.commands import run_cli

  for name, message in (('model.npz', 'must end in .safetensors or .pth or .pt'),
                        ('absent/model.pth', 'no such folder')):
    with pytest.raises(UserError, match=message):
      check_state_dict_output(tmp_path / name)
  written = save_state_dict({'a': np.ones(2, np.float32)}, tmp_path / 'a.safetensors')
  with pytest.raises(UserError, match='never overwritten'):
    save_state_dict({'a': np.zeros(2, np.float32)}, written)
  assert [p.name for p in tmp_path.iterdir()] == ['a.safetensors']  # No temporary file left.
  both = run_cli('-m', 'clan_jax.convert', f'--workdir={tmp_path}', '--config=configs/demo.py',
                 f'--output={tmp_path / "b.safetensors"}', check_returncode=2)
  assert 'drop --config' in both.stderr and 'Traceback' not in both.stderr
