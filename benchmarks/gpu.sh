#!/usr/bin/env bash
# Train-step and generation speed on one GPU: both conv paths, fp32 and bf16.
#
#   bash benchmarks/gpu.sh [extra flags for train_step.py]
#
# Needs jax with CUDA and the project's packages importable (PYTHONPATH=. from
# the repository root works when they are installed). One step is 1 D + 2 G
# updates; more steps per timed run than on the CPU, since a GPU step takes
# about a millisecond and a short run would time the launch overhead.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 benchmarks/train_step.py \
  --conv_impl=xla --conv_impl=matmul --dtype=float32 --dtype=bfloat16 \
  --batch_size=64 --batch_size=256 --steps=50 --repeats=5 "$@"
python3 benchmarks/train_step.py --image_size=128 \
  --conv_impl=xla --dtype=float32 --dtype=bfloat16 \
  --batch_size=64 --steps=50 --repeats=5 "$@"
python3 benchmarks/generation.py \
  --conv_impl=xla --conv_impl=matmul --dtype=float32 --dtype=bfloat16 \
  --batches=20 --repeats=5
