#!/usr/bin/env bash
# Run THERE, on the GPU machine, as the session's one device command (scripts/gpu_kit.sh prepared .whl/ and .gpu/
# here first):
#
#   run(command="bash scripts/gpu_check.sh", carry=[".whl", ".gpu"], timeout_s=600)
#
# Bounded to BUDGET seconds (default 555) in all, each phase under `timeout`, results written as each phase ends:
#   0. install the wheels into /tmp/site, check every requirement against what is installed (env.json)
#   a. tests/test_gpu.py: the five accelerate configs at one process on the tiny Gemma- and SmolLM2-shaped models
#      (train, checkpoint + resume, adapter and token rows vs `single`, export + doctor) -> configs.json + .xml
#   b. random-init SmolLM2-135M and ~1B Llama shapes, then ours vs TRL defaults vs TRL bf16 on the same fixed
#      batches (scripts/bench_train.py): tokens/s, peak GPU memory, MFU (OWN_STEPS=52: 135M also in each arm's
#      own order, three more runs, if the budget allows)
#   -> bench/gpu.json, bench/gpu.md (scripts/gpu_report.py), copied with the logs to $OUT (8 files at most).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-out}
BUDGET=${BUDGET:-555}
PY=${PYTHON:-python3}
LOGS=runs/gpu
mkdir -p "$OUT" "$LOGS"
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
phase() { echo "=== $1 ($(($(date +%s) - T0)) s in, $(left) s left)"; }
finish() {
  "$PY" scripts/gpu_report.py --configs "$LOGS/configs.json" --junit "$LOGS/configs.xml" --env "$OUT/env.json" \
    --bench smollm2-135m=bench/gpu-smollm2-135m.json --bench llama-1b=bench/gpu-llama-1b.json >"$LOGS/report.log" 2>&1
  cp bench/gpu.json bench/gpu.md "$OUT"/ 2>/dev/null
  cp "$LOGS/configs.json" "$OUT"/ 2>/dev/null
  tar czf "$OUT/logs.tgz" "$LOGS" runs/bench-gpu-*/*.log bench/gpu-*.json 2>/dev/null
  cat bench/gpu.md 2>/dev/null || cat "$LOGS/report.log"
  echo "=== done in $(($(date +%s) - T0)) s"
}
trap finish EXIT

phase "install"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export INSTRUCTIFY_CACHE=/tmp/instructify
"$PY" scripts/gpu_requirements.py --installed .whl --out "$OUT/env.json" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv | tee "$LOGS/gpu.csv"

phase "a: accelerate configs (tests/test_gpu.py)"
GPU_RESULTS="$LOGS/configs.json" timeout 210 "$PY" -m pytest -q -p no:cacheprovider -rfEs tests/test_gpu.py \
  --junitxml "$LOGS/configs.xml" >"$LOGS/configs.log" 2>&1
echo "pytest exit $?"; tail -25 "$LOGS/configs.log"

phase "b: random-init model shapes"
timeout 90 "$PY" scripts/gpu_models.py .gpu/models /tmp/gpu-models || exit 1
# ours vs TRL on the quickstart's data (chitchat) at up to 512 tokens, batch 32; 12 steps per run, 2 not timed.
bench() {  # SHAPE OWN_STEPS SECONDS
  phase "b: $1"
  timeout "$3" "$PY" scripts/bench_train.py --config configs/quickstart.yaml --steps 12 --rounds 1 \
    --own-steps "$2" --out "bench/gpu-$1.json" --runs-dir "runs/bench-gpu-$1" \
    "model.name=/tmp/gpu-models/$1" data.max_length=512 training.per_device_batch_size=32 \
    >"$LOGS/bench-$1.log" 2>&1
  echo "bench $1 exit $?"; tail -4 "$LOGS/bench-$1.log"
}
bench smollm2-135m "${OWN_STEPS:-0}" $(($(left) * 40 / 100))
bench llama-1b 0 $(($(left) - 20))
