#!/usr/bin/env bash
# Speed II (issue 20) as one call on a lent GPU, at most 9 minutes: CLAN-R50, 448 px, bf16,
# train. Today's step against each new form in one process, then where the time goes, batch
# 128, XLA flags one at a time and torch.compile, each phase under its own time limit.
#
#   OUT=/tmp/gpu bash scripts/gpu_speed.sh                 # on the GPU (BUDGET_S=530)
#   SIZE=64 DEPTH=18 BATCH=2 STEPS=2 ROUNDS=2 OUT=/tmp/dry bash scripts/gpu_speed.sh   # CPU dry run
#
# Phases in order of importance; each writes its JSON when it ends and is skipped when the
# budget left is under its minimum. At most 8 files come back from a device call: env.txt,
# log.txt and six JSON files (variants, ceilings, profile, batch, flags,
# torch). Needs only jax, flax, optax, absl, numpy (and torch
# for the last phase): the GPU image has no clu, TensorFlow or ml_collections.
set -u
OUT=${OUT:-/tmp/clan_gpu_speed}
PY=${PYTHON:-python3}
SIZE=${SIZE:-448}
BATCH=${BATCH:-64}
DEPTH=${DEPTH:-50}
STEPS=${STEPS:-5}
ROUNDS=${ROUNDS:-5}
BUDGET_S=${BUDGET_S:-530}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}  # H100/H200 SXM, dense bf16 (datasheet).
PEAK_GBPS=${PEAK_GBPS:-}  # Memory bandwidth for the profile; empty: the card's datasheet figure.
# JAX's persistent compilation cache, shared by every process; in jax >= 0.10 it holds XLA's GPU
# autotuning results too (jax_persistent_cache_enable_xla_caches).
CACHE=${CACHE:-/tmp/clan_gpu_cache}
# The new forms, most important first: all together, then each alone (docs/MODEL.md).
NEW="bn_impl=custom_vjp;downsample_impl=conv;stem_channels=8;clsa_impl=taps"
ALONE=("bn_impl=custom_vjp" "downsample_impl=conv" "stem_channels=4" "stem_channels=8"
       "clsa_impl=taps" "clsa_impl=im2col")
FLAGS_TO_TRY=(--xla_gpu_enable_triton_gemm=false --xla_gpu_cudnn_gemm_fusion_level=2)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$CACHE"
cd "$(dirname "$0")/.."
START=$(date +%s)
log() { tee -a "$OUT/log.txt"; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

run() {  # run NAME MIN_S MAX_S ARGS...: one benchmark call under min(MAX_S, budget left - 5)
  local name=$1 min=$2 max=$3; shift 3
  local limit; limit=$(left); limit=$((limit - 5 < max ? limit - 5 : max))
  if [ "$limit" -lt "$min" ]; then
    echo "=== $name: skipped, ${limit}s left of the budget (needs $min)" | log; return 1
  fi
  echo "=== $name (limit ${limit}s, $(date -u +%T)): $*" | log
  timeout -k 5 "$limit" $PY -m clan_jax.benchmark --depth="$DEPTH" --image_size="$SIZE" \
    --dtype=bfloat16 --peak_tflops="$PEAK_TFLOPS" --compilation_cache_dir="$CACHE/jax" "$@" \
    2>&1 | grep -v 'Unable to initialize' | log
  local status=${PIPESTATUS[0]}
  [ "$status" = 124 ] && echo "=== $name: stopped at its limit" | log
  return 0
}

best_variant() {  # The fastest variant that passed its check in variants.json, else $NEW.
  $PY - "$OUT/variants.json" <<'EOF' 2>/dev/null || echo "$NEW"
import json, sys
rows = [r for r in json.load(open(sys.argv[1]))
        if r.get('variant') not in (None, 'today') and r.get('check_passed')
        and r.get('step_time_s')]
print(min(rows, key=lambda r: r['step_time_s'])['variant'] if rows else '')
EOF
}

merge() {  # merge OUT_JSON PARTS...: the parts' records in one file, each marked with its part
  $PY - "$@" <<'EOF' 2>&1 | log
import json, os, sys
records = []
for path in sys.argv[2:]:
  if os.path.exists(path):
    for record in json.load(open(path)):
      records.append({**record, 'part': os.path.basename(path)[:-5]})
json.dump(records, open(sys.argv[1], 'w'), indent=1)
print(f'{os.path.basename(sys.argv[1])}: {len(records)} records')
EOF
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit \
    --format=csv || echo 'no nvidia-smi'
  $PY -c 'import sys, jax, flax, optax; print(sys.version); print("jax", jax.__version__,
"flax", flax.__version__, "optax", optax.__version__); print(jax.devices())'
  $PY -c 'import torch; print("torch", torch.__version__)' || echo 'no torch'
} > "$OUT/env.txt" 2>&1
echo "XLA flags this jaxlib accepts (each tried alone: an unknown flag aborts a process):" \
  >> "$OUT/env.txt"
timeout 60 $PY -m clan_jax.benchmark --xla_flags_probe="$(IFS=,; echo "${FLAGS_TO_TRY[*]}")" \
  --json="$CACHE/probe.json" >> "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | log
on_h100=0; grep -q 'H100' "$OUT/env.txt" && on_h100=1
# HBM bandwidth by the datasheets: H100 SXM 3.35 TB/s, H200 4.8 TB/s.
[ -z "$PEAK_GBPS" ] && { PEAK_GBPS=3350; grep -q 'H200' "$OUT/env.txt" && PEAK_GBPS=4800; }

common=(--batch_size="$BATCH" --steps="$STEPS" --rounds="$ROUNDS")
variant_args=(); for v in "${ALONE[@]}"; do variant_args+=(--variants="$v"); done
# 1. Does the new step beat today's? Both orders of importance in two calls, so that a limit
#    hit in the second leaves the first's answer (today's compile comes from the cache).
run variants 90 240 "${common[@]}" --variants="$NEW" --json="$CACHE/variants_new.json"
merge "$OUT/variants.json" "$CACHE/variants_new.json"
run variants_alone 90 150 "${common[@]}" "${variant_args[@]}" --json="$CACHE/variants_alone.json"
merge "$OUT/variants.json" "$CACHE/variants_new.json" "$CACHE/variants_alone.json"
# 2. The card's ceilings: copy bandwidth and matrix-product TFLOP/s.
run ceilings 20 40 --ceilings --json="$OUT/ceilings.json"
# 3. Where the time goes: today's step and the best variant, traced.
BEST=$(best_variant); BEST=${BEST:-$NEW}
echo "best variant: $BEST" | log
run profile 60 120 --batch_size="$BATCH" --steps=3 --rounds=2 --variants="$BEST" \
  --profile_steps=3 --peak_gbps="$PEAK_GBPS" --json="$OUT/profile.json"
# 4. Batch 128 against 64, and remat at 128 (it aborted XLA's GPU compiler before) with the
#    downsample as a strided convolution, the form meant to compile.
REMAT="$BEST;remat=True"; [[ "$BEST" == *downsample_impl=* ]] || REMAT="$REMAT;downsample_impl=conv"
run batch 60 120 --batch_size=$((2 * BATCH)) --steps="$STEPS" --rounds=3 --variants="$BEST" \
  --variants="$REMAT" --json="$OUT/batch.json"
# 5. XLA flags one at a time on the best variant (a process each: flags are per process).
for flag in "${FLAGS_TO_TRY[@]}"; do
  name=flags_$(echo "$flag" | sed 's/^--xla_gpu_//; s/=.*//')
  if ! grep -q -- "^$flag .*accepted" "$OUT/env.txt"; then
    echo "=== $name: skipped, this jaxlib does not accept $flag" | log; continue
  fi
  XLA_FLAGS="${XLA_FLAGS:-} $flag" run "$name" 60 100 --batch_size="$BATCH" --steps="$STEPS" \
    --rounds=3 --variants="$BEST" --json="$CACHE/$name.json"
done
merge "$OUT/flags.json" "$CACHE"/flags_*.json
# 6. torch.compile on this card, unless it is the H100 (its figures are in BENCHMARKS.md).
if [ "$on_h100" = 0 ]; then
  run torch_compile 150 240 --model=clan --modes=train --frameworks=torch \
    --torch_variants=compile,amp_bf16 --batch_size="$BATCH" --steps=10 --json="$OUT/torch.json"
fi
echo "=== done $(date -u +%T), $(($(date +%s) - START)) s" | log
