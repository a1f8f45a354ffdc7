"""Default configuration: every field the project reads, with its default.

    python main.py --config=configs/default.py --workdir=/tmp/clan

Dataset recipes (configs/cub.py, ...) start from this file and override what differs.
Path fields default to '' (never None: ml_collections cannot override a None field
from the command line).
"""

import ml_collections


def get_model_config() -> ml_collections.ConfigDict:
  """The model section; the fields follow CLAN_SPEC (docs/ARCHITECTURE.md)."""
  model = ml_collections.ConfigDict()
  model.name = 'clan'  # 'clan' or 'resnet' (the plain classifier: GAP -> fc).
  model.depth = 50  # ResNet depth: 18, 34, 50, 101 or 152.
  # Backbone stages whose maps are the mid-level maps (layer4 is the top-level map).
  model.mid_stages = (2, 3)
  model.use_clca = True  # Cross-layer context attention (top -> mid).
  model.use_clsa = True  # Cross-layer spatial attention (mid -> top).
  model.clca_kind = 'cross_attention'  # or 'global_context' (GCNet-style pooling).
  model.clca_dim = 256  # d: width of CLCA's queries, keys and values.
  model.clca_heads = 1  # Attention heads; clca_dim must be divisible by it.
  model.head_dim = 512  # Width of each mid-level head's 1x1 conv.
  model.fusion = 'sum'  # Prediction: 'sum' of all heads' logits, 'top' or 'concat'.
  model.head_loss_weights = ml_collections.ConfigDict(
      {'top': 1.0, 'mid': 1.0, 'concat': 1.0})
  model.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16' (mixed precision).
  return model


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = get_model_config()
  config.seed = 0
  return config
