#!/usr/bin/env bash
# BatchNorm forms' accuracy (BENCHMARKS.md, issue 20): args depth, image size, batch.
cd "$(dirname "$0")" && export PYTHONPATH=../../..
python bf16_against_float32.py 18 64 2 && python bf16_against_float32.py 18 224 4
python float32_against_float64.py 18 224 4 && python float32_against_float64.py 50 224 8
