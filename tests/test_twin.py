"""The PyTorch twin: torchvision's exact key names and shapes, and its initialisation."""

import numpy as np
import pytest
import torch

from clan_jax.pytorch.twin import ResNetClassifier, create_torch_model, load_arrays


@pytest.mark.parametrize('depth', [18, 34, 50, 101, 152])
def test_state_dict_keys_and_shapes_are_torchvisions(torchvision_shapes, depth):
  state_dict = ResNetClassifier(depth, 1000).state_dict()
  expected = torchvision_shapes[f'resnet{depth}']
  assert list(state_dict) == list(expected)  # Same keys, in torchvision's order.
  assert {k: list(v.shape) for k, v in state_dict.items()} == expected
  count = sum(p.numel() for p in ResNetClassifier(depth, 1000).parameters())
  assert count == torchvision_shapes[f'resnet{depth}_num_params']


def test_forward_returns_logits_dict_and_features(resnet_config):
  twin = create_torch_model(resnet_config, 3).eval()
  x = torch.randn(2, 3, 64, 64)
  with torch.no_grad():
    outputs = twin(x)
    features = twin.features(x)
  assert set(outputs) == {'logits'} and outputs['logits'].shape == (2, 3)
  assert [tuple(f.shape) for f in features.values()] == [
      (2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]


def test_initialisation_follows_torchvision():
  torch.manual_seed(0)
  twin = ResNetClassifier(18, 10)
  assert abs(twin.conv1.weight.std().item() / np.sqrt(2 / (64 * 49)) - 1) < 0.05
  assert torch.all(twin.layer1[0].bn2.weight == 1) and torch.all(twin.layer1[0].bn2.bias == 0)


def test_load_arrays_is_strict():
  twin = ResNetClassifier(18, 10)
  arrays = {k: v.numpy() for k, v in twin.state_dict().items()
            if not k.endswith('num_batches_tracked')}
  load_arrays(twin, arrays)
  del arrays['fc.bias']
  with pytest.raises(RuntimeError, match='fc.bias'):
    load_arrays(twin, arrays)
