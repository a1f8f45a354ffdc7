"""torchvision-compatible ResNet-18/34/50/101/152 (v1.5: stride on the bottleneck's 3x3), NHWC.

Submodule names map one to one onto torchvision's state_dict keys (see
clan_jax.convert): `layer2_0` is torchvision's `layer2.0`, `downsample_conv` and
`downsample_bn` are its `downsample.0` and `downsample.1`.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from clan_jax.models.conv_forms import downsample_conv, stem_conv
from clan_jax.models.layers import BatchNorm, Linear, conv, max_pool

Dtype = Any

STAGE_NAMES = ('layer1', 'layer2', 'layer3', 'layer4')
STAGE_WIDTHS = (64, 128, 256, 512)
# depth -> (block kind, blocks per stage)
ARCHITECTURES = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}
EXPANSION = {'basic': 1, 'bottleneck': 4}


def stage_channels(depth: int) -> dict[str, int]:
  """Output channels of each stage, e.g. {'layer1': 256, ..., 'layer4': 2048} for depth 50."""
  kind, _ = ARCHITECTURES[depth]
  return {name: width * EXPANSION[kind] for name, width in zip(STAGE_NAMES, STAGE_WIDTHS)}


class BasicBlock(nn.Module):
  width: int
  stride: int = 1
  dtype: Optional[Dtype] = None
  conv1x1_as_matmul: bool = True
  bn_impl: str = 'two_pass'  # layers.BN_IMPLS.
  downsample_impl: str = 'slice_matmul'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = conv(self.width, 3, self.stride, dtype=self.dtype, name='conv1')(x)
    y = BatchNorm(impl=self.bn_impl, relu=True, name='bn1')(y, train)
    y = conv(self.width, 3, dtype=self.dtype, name='conv2')(y)
    shortcut = _shortcut(self, x, self.width, train)
    return BatchNorm(impl=self.bn_impl, relu=True, name='bn2')(y, train, shortcut)


class Bottleneck(nn.Module):
  width: int
  stride: int = 1
  dtype: Optional[Dtype] = None
  conv1x1_as_matmul: bool = True
  bn_impl: str = 'two_pass'  # layers.BN_IMPLS.
  downsample_impl: str = 'slice_matmul'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out_channels = self.width * EXPANSION['bottleneck']
    y = conv(self.width, 1, dtype=self.dtype, as_matmul=self.conv1x1_as_matmul, name='conv1')(x)
    y = BatchNorm(impl=self.bn_impl, relu=True, name='bn1')(y, train)
    y = conv(self.width, 3, self.stride, dtype=self.dtype, name='conv2')(y)
    y = BatchNorm(impl=self.bn_impl, relu=True, name='bn2')(y, train)
    y = conv(out_channels, 1, dtype=self.dtype, as_matmul=self.conv1x1_as_matmul, name='conv3')(y)
    shortcut = _shortcut(self, x, out_channels, train)
    return BatchNorm(impl=self.bn_impl, relu=True, name='bn3')(y, train, shortcut)


def _shortcut(block: nn.Module, x: jax.Array, out_channels: int, train: bool) -> jax.Array:
  """Identity, or a strided 1x1 conv + BN where the shape changes (torchvision's `downsample`)."""
  if block.stride == 1 and x.shape[-1] == out_channels:
    return x
  y = downsample_conv(out_channels, block.stride, block.downsample_impl, dtype=block.dtype,
                      as_matmul=block.conv1x1_as_matmul, name='downsample_conv')(x)
  return BatchNorm(impl=block.bn_impl, name='downsample_bn')(y, train)


class ResNet(nn.Module):
  """The backbone: returns the four stage features {'layer1': ..., 'layer4': ...}."""
  depth: int = 50
  dtype: Optional[Dtype] = None  # Compute dtype of the convolutions; None: that of the inputs.
  conv1x1_as_matmul: bool = True  # 1x1 convolutions as matrix products (same parameters).
  remat: bool = False  # Recompute each block's activations in the backward pass (memory).
  bn_impl: str = 'two_pass'  # Train-mode BatchNorm's form (layers.BN_IMPLS).
  downsample_impl: str = 'slice_matmul'  # The forms of models/conv_forms.py (same function).
  stem_channels: int = 3

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if self.depth not in ARCHITECTURES:
      raise ValueError(f'depth={self.depth!r}; allowed: {sorted(ARCHITECTURES)}.')
    kind, blocks_per_stage = ARCHITECTURES[self.depth]
    block_cls = BasicBlock if kind == 'basic' else Bottleneck
    if self.remat:
      block_cls = nn.remat(block_cls, static_argnums=(2,))  # `train` is a Python bool.
    x = images.astype(self.dtype) if self.dtype else images
    x = stem_conv(self.stem_channels, dtype=self.dtype, name='conv1')(x)
    x = BatchNorm(impl=self.bn_impl, relu=True, name='bn1')(x, train)
    x = max_pool(x, 3, 2, 1)
    features = {}
    for index, (stage, width, blocks) in enumerate(
        zip(STAGE_NAMES, STAGE_WIDTHS, blocks_per_stage)):
      for block in range(blocks):
        stride = 2 if index > 0 and block == 0 else 1
        x = block_cls(width, stride, dtype=self.dtype, conv1x1_as_matmul=self.conv1x1_as_matmul,
                      bn_impl=self.bn_impl, downsample_impl=self.downsample_impl,
                      name=f'{stage}_{block}')(x, train)
      features[stage] = x
    return features


def global_average_pool(x: jax.Array) -> jax.Array:
  """Spatial mean in float32 at least, whatever the compute dtype."""
  return jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=(1, 2))


class ResNetClassifier(nn.Module):
  """The plain classifier: backbone -> global average pool -> `fc`."""
  num_classes: int
  depth: int = 50
  dtype: Optional[Dtype] = None
  conv1x1_as_matmul: bool = True
  remat: bool = False
  bn_impl: str = 'two_pass'
  downsample_impl: str = 'slice_matmul'
  stem_channels: int = 3

  def setup(self):
    self.backbone = ResNet(self.depth, dtype=self.dtype, conv1x1_as_matmul=self.conv1x1_as_matmul,
                           remat=self.remat, bn_impl=self.bn_impl,
                           downsample_impl=self.downsample_impl, stem_channels=self.stem_channels)
    self.fc = Linear(self.num_classes)

  def __call__(self, images: jax.Array, train: bool = False,
               return_attention: bool = False) -> dict[str, jax.Array]:
    del return_attention  # Accepted for a uniform API with CLAN; there are no maps here.
    features = self.backbone(images, train)
    return {'logits': self.fc(global_average_pool(features['layer4']))}

  def features(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """The backbone's stage features (for parity checks and feature extraction)."""
    return self.backbone(images, train)
