#!/usr/bin/env bash
# CLAN's eval cost over ResNet-50, JAX and torch channels_last, 5 runs each, 10 timed steps.
cd "$(dirname "$0")/../../.."
OUT=${OUT:-/tmp/evalcost}; mkdir -p $OUT
for model in clan resnet; do
  .venv/bin/python -m clan_jax.benchmark --model=$model --modes=eval --torch_variants=channels_last \
    --image_size=224 --batch_size=8 --dtype=float32 --steps=10 --warmup=2 --repeats=5 \
    --json=$OUT/eval_$model.json 2>&1 | grep -v 'Unable to initialize' | tail -6
done
