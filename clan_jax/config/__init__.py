"""Config validation: every field of a config checked, each error naming the field and the fix
(pure Python: no JAX, TensorFlow or ml_collections)."""
