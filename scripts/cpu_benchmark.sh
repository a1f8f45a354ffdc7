#!/usr/bin/env bash
# The CPU figures of BENCHMARKS.md (issue 9): CLAN-R50 and ResNet-50 at 224 px, batch 8, float32,
# JAX against the PyTorch twin's eager variants, 3 runs each (medians), then the train step on
# 1, 2, 4 and 8 XLA host devices. Run it on an otherwise idle machine: about 15 minutes on 2 cores.
#
#   OUT=/tmp/cpu bash scripts/cpu_benchmark.sh       # STEPS, REPEATS, PYTHON, HOST_DEVICES override
#   HOST_DEVICES= bash scripts/cpu_benchmark.sh       # without the host-device scaling
set -u
OUT=${OUT:-/tmp/clan_cpu_benchmark}
PY=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-5}
REPEATS=${REPEATS:-3}
HOST_DEVICES=${HOST_DEVICES-1,2,4,8}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
{ date -u; lscpu | grep -E 'Model name|^CPU\(s\)'; $PY -c 'import jax, torch; print("jax",
jax.__version__, "torch", torch.__version__)'; } 2>&1 | tee "$OUT/env.txt"
common="--image_size=224 --batch_size=8 --dtype=float32 --steps=$STEPS --warmup=1"
for model in clan resnet; do
  $PY -m clan_jax.benchmark $common --model=$model --repeats="$REPEATS" \
    --json="$OUT/cpu_$model.json" 2>&1 | grep -v 'Unable to initialize' | tee -a "$OUT/log.txt"
done
[ -z "$HOST_DEVICES" ] && exit 0
$PY -m clan_jax.benchmark $common --model=clan --modes=train --host_devices="$HOST_DEVICES" \
  --json="$OUT/cpu_scaling.json" 2>&1 | grep -v 'Unable to initialize' | tee -a "$OUT/log.txt"
