#!/usr/bin/env bash
# CLAN's cost over ResNet-50 (224 px, batch 8, float32), CLAN and ResNet alternated in one
# process: JAX (CLCA folded by 'auto', then the standard order) and torch channels_last.
cd "$(dirname "$0")/../../.."
OUT=${OUT:-/tmp/clan_cost}; mkdir -p $OUT
common="--clan_cost --image_size=224 --batch_size=8 --dtype=float32 --warmup=2"
{ date -u; lscpu | grep 'Model name'; .venv/bin/python -c 'import jax, torch; print("jax", jax.__version__, "torch", torch.__version__)'; } > $OUT/env.txt
.venv/bin/python -m clan_jax.benchmark $common --modes=eval --steps=10 --repeats=5 \
  --torch_variants=channels_last --json=$OUT/eval.json 2>&1 | grep -v 'Unable to initialize'
.venv/bin/python -m clan_jax.benchmark $common --modes=train --steps=6 --repeats=3 \
  --torch_variants=channels_last --json=$OUT/train.json 2>&1 | grep -v 'Unable to initialize'
.venv/bin/python -m clan_jax.benchmark $common --modes=eval --steps=10 --repeats=5 \
  --frameworks=jax --clca_order=standard --json=$OUT/eval_standard.json 2>&1 | grep -v 'Unable to initialize'
.venv/bin/python -m clan_jax.benchmark $common --modes=train --steps=6 --repeats=3 \
  --frameworks=jax --clca_order=standard --json=$OUT/train_standard.json 2>&1 | grep -v 'Unable to initialize'
date -u >> $OUT/env.txt
