"""The PyTorch twin of clan_jax's models, for parity checks and for users' PyTorch code.

Requires torch (`pip install clan-jax[torch]`); nothing else in the package imports
this module at import time. Its state_dict keys and shapes are torchvision's for
every ResNet depth, so torchvision checkpoints load into it strictly and its own
state_dicts load into torchvision. The twin never imports JAX.

`forward` returns a dict like the Flax model's `apply`: {'logits': (B, K)}. Tensors
are NCHW, as in torch.
"""

from typing import Any

import torch
from torch import nn

STAGE_NAMES = ('layer1', 'layer2', 'layer3', 'layer4')
STAGE_WIDTHS = (64, 128, 256, 512)
ARCHITECTURES = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, in_channels: int, width: int, stride: int):
    super().__init__()
    self.conv1 = _conv(in_channels, width, 3, stride)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = _conv(width, width, 3)
    self.bn2 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = _downsample(in_channels, width * self.expansion, stride)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = x if self.downsample is None else self.downsample(x)
    return self.relu(out + shortcut)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, in_channels: int, width: int, stride: int):
    super().__init__()
    self.conv1 = _conv(in_channels, width, 1)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = _conv(width, width, 3, stride)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = _conv(width, width * self.expansion, 1)
    self.bn3 = nn.BatchNorm2d(width * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = _downsample(in_channels, width * self.expansion, stride)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    shortcut = x if self.downsample is None else self.downsample(x)
    return self.relu(out + shortcut)


def _downsample(in_channels: int, out_channels: int, stride: int):
  if stride == 1 and in_channels == out_channels:
    return None
  return nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


class ResNetBackbone(nn.Module):
  """conv1, bn1 and layer1..layer4 under torchvision's names; `features` returns each stage."""

  def __init__(self, depth: int = 50):
    super().__init__()
    if depth not in ARCHITECTURES:
      raise ValueError(f'depth={depth!r}; allowed: {sorted(ARCHITECTURES)}.')
    kind, blocks_per_stage = ARCHITECTURES[depth]
    block_cls = BasicBlock if kind == 'basic' else Bottleneck
    self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, padding=1)
    in_channels = 64
    for index, (stage, width, blocks) in enumerate(
        zip(STAGE_NAMES, STAGE_WIDTHS, blocks_per_stage)):
      layers = []
      for block in range(blocks):
        stride = 2 if index > 0 and block == 0 else 1
        layers.append(block_cls(in_channels, width, stride))
        in_channels = width * block_cls.expansion
      setattr(self, stage, nn.Sequential(*layers))
    self.out_channels = in_channels

  def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
    features = {}
    for stage in STAGE_NAMES:
      x = getattr(self, stage)(x)
      features[stage] = x
    return features


def init_like_torchvision(module: nn.Module) -> None:
  """torchvision's ResNet initialisation: kaiming-normal fan-out convs, BN scale 1 / bias 0."""
  for m in module.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.ones_(m.weight)
      nn.init.zeros_(m.bias)


class ResNetClassifier(ResNetBackbone):
  """torchvision's ResNet: the backbone, global average pooling and `fc`."""

  def __init__(self, depth: int = 50, num_classes: int = 1000):
    super().__init__(depth)
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(self.out_channels, num_classes)
    init_like_torchvision(self)

  def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    top = self.features(images)['layer4']
    return {'logits': self.fc(torch.flatten(self.avgpool(top), 1))}


def load_arrays(module: nn.Module, arrays: dict[str, Any]) -> nn.Module:
  """Loads {key: numpy array} strictly; BatchNorm counters absent from `arrays` are set to 0."""
  state_dict = {key: torch.as_tensor(value) for key, value in arrays.items()}
  for key, value in module.state_dict().items():
    if key.endswith('num_batches_tracked') and key not in state_dict:
      state_dict[key] = torch.zeros_like(value)
  module.load_state_dict(state_dict, strict=True)
  return module


def create_torch_model(model_config: Any, num_classes: int) -> nn.Module:
  """The twin of clan_jax.models.create_model(model_config, num_classes)."""
  if model_config.name == 'resnet':
    return ResNetClassifier(model_config.depth, num_classes)
  raise ValueError(f"model.name={model_config.name!r} has no twin in this version; "
                   "use 'resnet'.")
