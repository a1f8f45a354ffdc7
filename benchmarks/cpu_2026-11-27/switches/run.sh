#!/usr/bin/env bash
# CPU: JAX CLAN-R50 224 b8 f32 train step under XLA flag variants, 3 runs each.
cd "$(dirname "$0")/../../.."
OUT=${OUT:-/tmp/xla_sweep}; mkdir -p $OUT
common="--image_size=224 --batch_size=8 --dtype=float32 --steps=5 --warmup=1 --model=clan --modes=train --frameworks=jax --repeats=3"
run() { name=$1; shift; flags=$1; shift
  echo "=== $name XLA_FLAGS='$flags' $* $(date -u +%T)"
  XLA_FLAGS="$flags" .venv/bin/python -m clan_jax.benchmark $common "$@" --json=$OUT/$name.json 2>&1 | grep -v 'Unable to initialize' | tail -4
}
run default ""
run no_matmul "" --noconv1x1_as_matmul
run onednn "--xla_cpu_use_onednn=true"
run no_xnnpack "--xla_cpu_use_xnnpack=false"
run no_ynn_fusion "--xla_cpu_experimental_ynn_fusion_type="
echo "=== done $(date -u +%T)"
