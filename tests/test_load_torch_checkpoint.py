"""load_torch_checkpoint: safe unpickling, wrappers, safetensors, clear refusals."""

import argparse
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clan_jax.convert import load_torch_checkpoint
from clan_jax.base.errors import CheckpointError, UserError


def _state_dict():
  torch.manual_seed(0)
  module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  return module.state_dict()


def _assert_loaded(arrays, state_dict):
  assert set(arrays) == {k for k in state_dict if not k.endswith('num_batches_tracked')}
  for key, array in arrays.items():
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, state_dict[key].float().numpy())


def test_plain_state_dict(tmp_path):
  state_dict = _state_dict()
  torch.save(state_dict, tmp_path / 'plain.pth')
  _assert_loaded(load_torch_checkpoint(tmp_path / 'plain.pth'), state_dict)


@pytest.mark.parametrize('wrap', [
    lambda sd: {'state_dict': sd, 'epoch': 3},
    lambda sd: {'model': sd, 'optimizer': {'lr': 0.1}},
    lambda sd: {'model': {'state_dict': sd}},
    lambda sd: {'module.' + k: v for k, v in sd.items()},
    lambda sd: {'state_dict': {'module.' + k: v for k, v in sd.items()}},
    # A model held as `self.model` (PyTorch Lightning): 'model.' on every key.
    lambda sd: {'state_dict': {'model.' + k: v for k, v in sd.items()}},
    lambda sd: {'module.model.' + k: v for k, v in sd.items()},
])
def test_wrappers_and_dataparallel_prefix_are_removed(tmp_path, wrap):
  state_dict = _state_dict()
  torch.save(wrap(state_dict), tmp_path / 'wrapped.pt')
  _assert_loaded(load_torch_checkpoint(tmp_path / 'wrapped.pt'), state_dict)


@pytest.mark.parametrize('prefix', ['module.', 'model.', 'module.model.'])
def test_safetensors_key_prefixes_are_removed(tmp_path, prefix):
  state_dict = _state_dict()
  save_file({prefix + k: v for k, v in state_dict.items()}, str(tmp_path / 'w.safetensors'))
  _assert_loaded(load_torch_checkpoint(tmp_path / 'w.safetensors'), state_dict)


def test_a_model_prefix_on_some_keys_only_is_kept(tmp_path):
  state_dict = {'model.weight': torch.ones(2), 'head.weight': torch.zeros(2)}
  save_file(state_dict, str(tmp_path / 'two.safetensors'))
  assert set(load_torch_checkpoint(tmp_path / 'two.safetensors')) == set(state_dict)


def test_bfloat16_pth_and_safetensors_are_upcast(tmp_path):
  state_dict = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                for k, v in _state_dict().items()}
  torch.save(state_dict, tmp_path / 'bf16.pth')
  save_file(state_dict, str(tmp_path / 'bf16.safetensors'))
  for name in ('bf16.pth', 'bf16.safetensors'):
    _assert_loaded(load_torch_checkpoint(tmp_path / name), state_dict)


class _RunsCode:
  """A pickle payload that would create a marker file if it were ever executed."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
  marker = tmp_path / 'payload_ran'
  path = tmp_path / 'evil.pth'
  torch.save({'weight': torch.zeros(2), 'payload': _RunsCode(marker)}, path)
  with pytest.raises(CheckpointError, match=r'references posix.system, which would run code'):
    load_torch_checkpoint(path)
  with pytest.raises(UserError, match='refusing to allow posix.system'):
    load_torch_checkpoint(path, allowed_globals=['posix.system'])
  assert not marker.exists()


def test_benign_global_is_named_and_can_be_allowed(tmp_path):
  state_dict = _state_dict()
  path = tmp_path / 'train_checkpoint.pth'
  torch.save({'state_dict': state_dict, 'args': argparse.Namespace(lr=0.1)}, path)
  with pytest.raises(CheckpointError) as error:
    load_torch_checkpoint(path)
  assert 'argparse.Namespace' in str(error.value)
  assert '--allow_global=argparse.Namespace' in str(error.value)
  _assert_loaded(load_torch_checkpoint(path, allowed_globals=['argparse.Namespace']), state_dict)


def test_missing_unreadable_and_empty_files_are_clear_errors(tmp_path):
  with pytest.raises(CheckpointError, match='no such checkpoint file') as error:
    load_torch_checkpoint(tmp_path / 'absent.pth')
  assert 'download' not in str(error.value)  # Not a torchvision file: no URL to give.
  with pytest.raises(CheckpointError) as error:  # One of torchvision's ImageNet files.
    load_torch_checkpoint(tmp_path / 'resnet34-b627a593.pth')
  assert str(error.value) == (f'{tmp_path}/resnet34-b627a593.pth: no such checkpoint file; '
                              'download it from '
                              'https://download.pytorch.org/models/resnet34-b627a593.pth.')
  (tmp_path / 'garbage.pth').write_bytes(b'not a checkpoint')
  with pytest.raises(CheckpointError, match='garbage.pth'):
    load_torch_checkpoint(tmp_path / 'garbage.pth')
  (tmp_path / 'garbage.safetensors').write_bytes(b'\x00' * 16)
  with pytest.raises(CheckpointError, match='not a readable safetensors file'):
    load_torch_checkpoint(tmp_path / 'garbage.safetensors')
  # Before these checks, torch's unpickler raised KeyError on b'hello', and called an HTML
  # page 'refused' with the advice to retry with weights_only=False.
  for name, data, message in (
      ('empty.pth', b'', 'the file is empty'),
      ('text.pth', b'hello', "begins with b'hello'"),
      ('page.pth', b'<!DOCTYPE html>\n<html>Not found</html>', 'A failed download'),
      ('truncated.pth', b'PK\x03\x04' + b'\x00' * 20, 'not a readable PyTorch checkpoint')):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(CheckpointError, match=f'{name}: .*{message}'):
      load_torch_checkpoint(tmp_path / name)
  torch.save({'epoch': 3}, tmp_path / 'no_tensors.pth')
  with pytest.raises(CheckpointError, match='no state_dict of tensors found'):
    load_torch_checkpoint(tmp_path / 'no_tensors.pth')


def test_pth_without_torch_says_how_to_install_it(tmp_path, monkeypatch):
  import sys

  torch.save(_state_dict(), tmp_path / 'plain.pth')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError.
  with pytest.raises(UserError, match=r'needs PyTorch: in the clan-jax folder, pip install '
                     r'-c constraints.txt -e "\.\[torch\]"'):
    load_torch_checkpoint(tmp_path / 'plain.pth')
