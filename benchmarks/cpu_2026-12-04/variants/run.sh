#!/usr/bin/env bash
# Issue 20's forms on the CPU through the benchmark's own --variants (BENCHMARKS.md).
cd "$(dirname "$0")/../../.." && python -m clan_jax.benchmark --depth=50 --image_size=224 \
  --dtype=float32 --batch_size=8 --steps=1 --rounds=11 \
  --variants="bn_impl=custom_vjp;clsa_impl=im2col" --variants="bn_impl=custom_vjp" \
  --variants="clsa_impl=im2col" --json=benchmarks/cpu_2026-12-04/variants/records.json
