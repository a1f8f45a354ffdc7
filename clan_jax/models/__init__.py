"""Model construction: `create_model(model_config, num_classes)`.

The model modules import only jax and flax (no TensorFlow, TFDS, clu or ml_collections),
so that a bare GPU image can build and run them. The names below load on first access
(PEP 562), so that `clan_jax.models.fields` (pure Python) imports no JAX or flax.
"""

import importlib

_LAZY = {
    'create_model': 'factory', 'COMPUTE_DTYPES': 'factory', 'CLAN': 'clan',
    'ResNet': 'resnet', 'ResNetClassifier': 'resnet', 'stage_channels': 'resnet',
    'cross_entropy': 'loss', 'multi_head_loss': 'loss',
}


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
  globals()[name] = value  # Later accesses skip this hook.
  return value


def __dir__():
  return sorted({*globals(), *_LAZY})


__all__ = list(_LAZY)
