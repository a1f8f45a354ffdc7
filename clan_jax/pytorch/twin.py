"""The PyTorch twin of clan_jax's models, for parity checks and for users' PyTorch code.

Requires torch (`pip install -e '.[torch]'` in the clan-jax folder); nothing else in the
package imports this module at import time. Its state_dict keys and shapes are torchvision's for
every ResNet depth, so torchvision checkpoints load into it strictly and its own
state_dicts load into torchvision. The twin never imports JAX.

`forward(images, return_attention=False)` returns a dict like the Flax model's `apply`:
{'logits': (B, K)} for the plain ResNet; for CLAN also 'heads', 'clsa' and 'clca' (module
and key names: docs/MODEL.md). Tensors are NCHW, as in torch: CLSA maps are (B, 1, H, W).
"""

import math
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
  """torchvision's ResNet initialisation: kaiming-normal fan-out for the bias-free convs
  (each followed by BN), BN scale 1 / bias 0. Convs with a bias, Linear and LayerNorm keep
  torch's defaults."""
  for m in module.modules():
    if isinstance(m, nn.Conv2d) and m.bias is None:
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

  def forward(self, images: torch.Tensor, return_attention: bool = False):
    del return_attention  # A uniform API with CLAN; there are no maps here.
    top = self.features(images)['layer4']
    return {'logits': self.fc(torch.flatten(self.avgpool(top), 1))}


class CrossAttentionContext(nn.Module):
  """CLCA 'cross_attention': mid positions attend over the top map; BN scale starts at 0."""

  def __init__(self, mid_channels: int, top_channels: int, dim: int, heads: int):
    super().__init__()
    self.heads, self.head_dim = heads, dim // heads
    self.query = nn.Conv2d(mid_channels, dim, 1)
    self.key = nn.Conv2d(top_channels, dim, 1)
    self.value = nn.Conv2d(top_channels, dim, 1)
    self.out = nn.Conv2d(dim, mid_channels, 1, bias=False)
    self.bn = nn.BatchNorm2d(mid_channels)

  def forward(self, mid: torch.Tensor, top: torch.Tensor):
    batch, _, mid_h, mid_w = mid.shape
    # (B, d, N) -> (B, h, d/h, N): head i takes channels [i*d/h, (i+1)*d/h).
    split = lambda x: x.flatten(2).reshape(batch, self.heads, self.head_dim, -1)
    q, k, v = split(self.query(mid)), split(self.key(top)), split(self.value(top))
    attention = torch.softmax(q.transpose(2, 3) @ k / math.sqrt(self.head_dim), dim=-1)
    context = (attention @ v.transpose(2, 3)).transpose(2, 3)  # (B, h, d/h, Hm*Wm)
    context = context.reshape(batch, -1, mid_h, mid_w)
    return mid + self.bn(self.out(context)), attention


class GlobalContext(nn.Module):
  """CLCA 'global_context' (GCNet-style); `expand` starts at 0."""

  def __init__(self, mid_channels: int, top_channels: int, dim: int):
    super().__init__()
    self.mask = nn.Conv2d(top_channels, 1, 1)
    self.reduce = nn.Linear(top_channels, dim)
    self.norm = nn.LayerNorm(dim)
    self.expand = nn.Linear(dim, mid_channels)

  def forward(self, mid: torch.Tensor, top: torch.Tensor):
    weights = torch.softmax(self.mask(top).flatten(1), dim=-1)  # (B, Ht*Wt)
    context = torch.einsum('bp,bcp->bc', weights, top.flatten(2))
    y = self.expand(torch.relu(self.norm(self.reduce(context))))
    return mid + y[:, :, None, None], weights


class MidHead(nn.Module):
  def __init__(self, in_channels: int, head_dim: int, num_classes: int):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, head_dim, 1, bias=False)
    self.bn = nn.BatchNorm2d(head_dim)
    self.fc = nn.Linear(head_dim, num_classes)

  def forward(self, x: torch.Tensor):
    z = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
    return self.fc(z), z


class CLAN(ResNetBackbone):
  """The twin of clan_jax.models.CLAN, with the module names of docs/MODEL.md's key table."""

  def __init__(self, depth: int = 50, num_classes: int = 1000, mid_stages=(2, 3),
               use_clca: bool = True, use_clsa: bool = True,
               clca_kind: str = 'cross_attention', clca_dim: int = 256, clca_heads: int = 1,
               head_dim: int = 512, fusion: str = 'sum'):
    super().__init__(depth)
    self.mid_names = tuple(f'layer{stage}' for stage in mid_stages)
    self.use_clca, self.use_clsa, self.fusion = use_clca, use_clsa, fusion
    channels = {name: self._stage_channels(name) for name in STAGE_NAMES}
    top = channels['layer4']
    if use_clca:
      if clca_kind == 'cross_attention':
        block = lambda c: CrossAttentionContext(c, top, clca_dim, clca_heads)
      elif clca_kind == 'global_context':
        block = lambda c: GlobalContext(c, top, clca_dim)
      else:
        raise ValueError(f'clca_kind={clca_kind!r}; allowed: cross_attention, global_context.')
      self.clca = nn.ModuleDict({name: block(channels[name]) for name in self.mid_names})
    if use_clsa:
      self.clsa = nn.ModuleDict({name: nn.Conv2d(2, 1, 7, padding=3) for name in self.mid_names})
    heads = {name: MidHead(channels[name], head_dim, num_classes) for name in self.mid_names}
    heads['concat'] = nn.Linear(top + len(self.mid_names) * head_dim, num_classes)
    self.heads = nn.ModuleDict(heads)
    self.fc = nn.Linear(top, num_classes)
    init_like_torchvision(self)
    for block in getattr(self, 'clca', {}).values():  # Identity at initialisation.
      if isinstance(block, CrossAttentionContext):
        nn.init.zeros_(block.bn.weight)
      else:
        nn.init.zeros_(block.expand.weight)
        nn.init.zeros_(block.expand.bias)

  def _stage_channels(self, name: str) -> int:
    last_block = getattr(self, name)[-1]
    return (last_block.bn3 if hasattr(last_block, 'bn3') else last_block.bn2).num_features

  def forward(self, images: torch.Tensor, return_attention: bool = False):
    features = self.features(images)
    top = features['layer4']
    mids = {name: features[name] for name in self.mid_names}
    outputs = {}
    if self.use_clca:
      attention = {}
      for name in self.mid_names:
        mids[name], attention[name] = self.clca[name](mids[name], top)
      if return_attention:
        outputs['clca'] = attention
    if self.use_clsa:
      maps, pooled = {}, []
      for name in self.mid_names:
        x = mids[name]
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        maps[name] = torch.sigmoid(self.clsa[name](stats))
        window = (x.shape[2] // top.shape[2], x.shape[3] // top.shape[3])
        pooled.append(nn.functional.avg_pool2d(maps[name], window))
      maps['fused'] = sum(pooled) / len(pooled)
      outputs['clsa'] = maps
      top = top * (1 + maps['fused'])
    pooled_top = top.mean(dim=(2, 3))
    heads, embeddings = {'top': self.fc(pooled_top)}, [pooled_top]
    for name in self.mid_names:
      heads[name], z = self.heads[name](mids[name])
      embeddings.append(z)
    heads['concat'] = self.heads['concat'](torch.cat(embeddings, dim=1))
    outputs['heads'] = heads
    outputs['logits'] = sum(heads.values()) if self.fusion == 'sum' else heads[self.fusion]
    return outputs


def head_weight(head: str, head_loss_weights) -> float:
  return head_loss_weights[head] if head in ('top', 'concat') else head_loss_weights['mid']


def multi_head_loss(outputs: dict, labels: torch.Tensor, head_loss_weights,
                    label_smoothing: float = 0.0):
  """The twin of clan_jax.models.multi_head_loss: (total, {head: cross-entropy})."""
  ce = lambda logits: nn.functional.cross_entropy(logits, labels,
                                                  label_smoothing=label_smoothing)
  if 'heads' not in outputs:
    loss = ce(outputs['logits'])
    return loss, {'logits': loss}
  per_head = {head: ce(logits) for head, logits in outputs['heads'].items()}
  total = sum(head_weight(head, head_loss_weights) * loss for head, loss in per_head.items())
  return total, per_head


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
  if model_config.name == 'clan':
    return CLAN(model_config.depth, num_classes, tuple(model_config.mid_stages),
                model_config.use_clca, model_config.use_clsa, model_config.clca_kind,
                model_config.clca_dim, model_config.clca_heads, model_config.head_dim,
                model_config.fusion)
  raise ValueError(f"model.name={model_config.name!r}; allowed: 'clan', 'resnet'.")


# ------------------------------------------------------------------ the training recipe

BACKBONE_PREFIXES = ('conv1.', 'bn1.', 'layer1.', 'layer2.', 'layer3.', 'layer4.')


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
  """The twin of clan_jax.train.optim.warmup_cosine, as a factor of the peak rate."""
  warmup_steps = min(warmup_steps, total_steps)
  if step < warmup_steps:
    return step / max(warmup_steps, 1)
  progress = min(max((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0), 1.0)
  return 0.5 * (1.0 + math.cos(math.pi * progress))


def create_torch_optimizer(module: nn.Module, optimizer_config: Any, *, num_classes: int,
                           batch_size: int, total_steps: int, warmup_steps: int):
  """torch.optim.SGD and a per-step LambdaLR with clan_jax.train.optim's recipe: two rate groups
  (the backbone, and `fc` when K = 1000; the new layers), linear scaling with the batch,
  weight decay on every parameter unless `decay_norm_and_bias` is False.

  Call `scheduler.step()` after each `optimizer.step()`. Only SGD has a twin.
  """
  c = optimizer_config
  if c.name != 'sgd':
    raise ValueError(f'optimizer.name={c.name!r} has no twin; only sgd.')
  scale = batch_size / c.base_batch_size
  groups = {}
  for name, parameter in module.named_parameters():
    backbone = name.startswith(BACKBONE_PREFIXES) or (name.startswith('fc.') and
                                                      num_classes == 1000)
    decay = c.decay_norm_and_bias or parameter.ndim > 1
    key = (backbone, decay)
    if key not in groups:
      rate = c.backbone_learning_rate if backbone else c.learning_rate
      groups[key] = {'params': [], 'lr': rate * scale,
                     'weight_decay': c.weight_decay if decay else 0.0}
    groups[key]['params'].append(parameter)
  optimizer = torch.optim.SGD(list(groups.values()), lr=c.learning_rate * scale,
                              momentum=c.momentum)
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps))
  return optimizer, scheduler
