"""Random-init models from the shapes scripts/gpu_kit.sh wrote (config + tokenizer, no weights), for the GPU
speed comparison: speed does not depend on the weights, and 135M parameters in bf16 alone would not travel.

    python scripts/gpu_models.py .gpu/models /tmp/gpu-models    # one folder per shape, bf16 safetensors
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def build(shape: Path, out: Path) -> int:
    """Initialise on the GPU (seconds, where the CPU would take a minute for 1B) and save; returns parameters."""
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(shape)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    for f in shape.iterdir():
        if f.name != "config.json":
            shutil.copy(f, out / f.name)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    shapes, out = Path(argv[0]), Path(argv[1])
    for shape in sorted(p for p in shapes.iterdir() if (p / "config.json").is_file()):
        n = build(shape, out / shape.name)
        print(f"{shape.name}: {n / 1e6:.0f}M parameters -> {out / shape.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
