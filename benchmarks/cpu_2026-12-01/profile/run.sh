#!/usr/bin/env bash
# Where the CPU step's time goes (BENCHMARKS.md): CLAN-R50, 224 px, batch 8, float32, JAX alone.
cd "$(dirname "$0")/../../.."
.venv/bin/python -m clan_jax.benchmark --frameworks=jax --profile_steps=3 \
  --json=benchmarks/cpu_2026-12-01/profile/records.json 2>&1 | grep -v 'Unable to initialize' \
  | tee benchmarks/cpu_2026-12-01/profile/table.txt
