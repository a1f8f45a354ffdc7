"""Performance tools: the step benchmark (no TensorFlow, clu or ml_collections: it runs on a bare
GPU image), the input-pipeline throughput, XLA op profiles, parameter and FLOP counts."""
