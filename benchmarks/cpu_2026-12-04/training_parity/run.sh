#!/usr/bin/env bash
# tests/test_training_parity.py's float32 3-step run per form (docs/PARITY.md, issue 20).
cd "$(dirname "$0")/../../../tests" && PYTHONPATH=..:. python \
  ../benchmarks/cpu_2026-12-04/training_parity/forms_against_torch_and_float64.py \
  today "clsa_impl=im2col" "bn_impl=custom_vjp"
