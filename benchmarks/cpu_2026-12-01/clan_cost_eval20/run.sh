#!/usr/bin/env bash
# CLAN's eval cost over ResNet-50 again, 20 alternated rounds per run (clan_cost/ had 10).
cd "$(dirname "$0")/../../.."
OUT=${OUT:-/tmp/clan_cost_eval20}; mkdir -p $OUT
date -u > $OUT/env.txt
.venv/bin/python -m clan_jax.benchmark --clan_cost --image_size=224 --batch_size=8 \
  --dtype=float32 --warmup=2 --modes=eval --steps=20 --repeats=5 --torch_variants=channels_last \
  --json=$OUT/eval.json 2>&1 | grep -v 'Unable to initialize'
date -u >> $OUT/env.txt
