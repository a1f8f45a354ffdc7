"""Config: validation of every config section, each error naming the field and the fix (pure
Python: no JAX, TensorFlow or ml_collections), and the --config flag loaded and validated."""
