"""clan-jax: the Cross-layer Attention Network (CLAN) for fine-grained visual categorisation.

Importing the package is cheap: it pulls in no TensorFlow, TFDS, clu, ml_collections
or torch; the submodules that need them import them where they are used.
"""

__version__ = '0.1.0'
