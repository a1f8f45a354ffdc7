#!/usr/bin/env bash
# The GPU check of issue 9 as one call on a lent GPU: CLAN-R50 at 448 px in bf16, JAX against the
# PyTorch twin (channels_last float32, autocast bf16, torch.compile) on the same card, after a
# correctness check, then JAX's implementation switches one at a time.
#
#   OUT=/tmp/gpu bash scripts/gpu_benchmark.sh     # SIZE, BATCH, DEPTH, STEPS, PEAK_TFLOPS override
#   PHASES="jax_remat clan_eval" PARITY=0 bash scripts/gpu_benchmark.sh    # some phases only
#   PHASES="jax_profile jax_batch jax_no_triton_gemm jax_clca_folded" bash scripts/gpu_benchmark.sh  # next GPU session
#
# Phases run in order of importance and each writes its records when it ends ($OUT/<phase>.json),
# so a run cut short keeps the phases before. Needs only jax, flax, optax, absl, numpy and torch.
set -u
OUT=${OUT:-/tmp/clan_gpu_benchmark}
PY=${PYTHON:-python3}
SIZE=${SIZE:-448}
BATCH=${BATCH:-64}
DEPTH=${DEPTH:-50}
STEPS=${STEPS:-15}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}  # H100 SXM, dense bf16 (datasheet).
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
log() { tee -a "$OUT/log.txt"; }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  $PY -c 'import sys, jax, flax, optax, torch; print(sys.version); print("jax", jax.__version__,
"flax", flax.__version__, "optax", optax.__version__, "torch", torch.__version__); print(jax.devices())'
} 2>&1 | tee "$OUT/env.txt"
if [ "${PARITY:-1}" = 1 ]; then
  echo "=== parity: CLAN-R$DEPTH logits against the float64 twin" | log
  $PY scripts/gpu_parity_check.py --depth="$DEPTH" 2>&1 | grep -v 'Unable to initialize' | log
fi

common="--depth=$DEPTH --image_size=$SIZE --batch_size=$BATCH --dtype=bfloat16 --steps=$STEPS
        --peak_tflops=$PEAK_TFLOPS"
phase() {  # phase NAME ARGS...: one benchmark run; its table in the log, its records in NAME.json
  local name=$1; shift
  echo "=== $name: $* ($(date -u +%T))" | log
  $PY -m clan_jax.benchmark $common "$@" --json="$OUT/$name.json" 2>&1 \
    | grep -v 'Unable to initialize' | log
}
run_phase() {
  case $1 in
    jax_profile)  # JAX's train step, then 3 traced steps: time per kind of XLA op and top ops.
      phase jax_profile --model=clan --modes=train --frameworks=jax --profile_steps=3 ;;
    clan_train) phase clan_train --model=clan --modes=train --torch_variants=channels_last,amp_bf16 ;;
    clan_train_compile)  # Torch only: the JAX figure is clan_train's.
      phase clan_train_compile --model=clan --modes=train --frameworks=torch --torch_variants=compile ;;
    resnet_train) phase resnet_train --model=resnet --modes=train --torch_variants=amp_bf16 ;;
    jax_switches)  # JAX's implementation switches, one at a time, against clan_train's JAX row.
      phase jax_switches --model=clan --modes=train --frameworks=jax --noconv1x1_as_matmul
      phase jax_attention_xla --model=clan --modes=train --frameworks=jax --attention_impl=xla ;;
    jax_remat) phase jax_remat --model=clan --modes=train --frameworks=jax --remat \
      --batch_size=$((2 * BATCH)) ;;
    clan_eval) phase clan_eval --model=clan --modes=eval --torch_variants=amp_bf16,compile ;;
    jax_batch)  # Is a batch of 64 too small to fill the card? JAX at half and twice BATCH.
      phase jax_batch_half --model=clan --modes=train --frameworks=jax --batch_size=$((BATCH / 2))
      phase jax_batch_double --model=clan --modes=train --frameworks=jax --batch_size=$((2 * BATCH)) ;;
    jax_no_triton_gemm)  # jax 0.11.2 aborted in its Triton GEMM fusion with remat at batch 128:
      # without Triton GEMMs (cuBLAS only), the plain step, then remat at twice BATCH.
      XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false" phase jax_no_triton_gemm \
        --model=clan --modes=train --frameworks=jax
      XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false" phase jax_remat_no_triton_gemm \
        --model=clan --modes=train --frameworks=jax --remat --batch_size=$((2 * BATCH)) ;;
    jax_clca_folded)  # 'auto' keeps CLCA's standard order where cuDNN's attention runs (bf16).
      phase jax_clca_folded --model=clan --modes=train,eval --frameworks=jax --clca_order=folded ;;
    *) echo "unknown phase $1" | log ;;
  esac
}
# At most 8 files come back from a device call: env.txt, log.txt and 6 phases' JSON at a time.
for name in ${PHASES:-clan_train clan_train_compile resnet_train jax_switches clan_eval}; do
  run_phase "$name"
done
echo "=== done $(date -u +%T)" | log
