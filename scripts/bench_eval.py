"""Eval speed: batched greedy generation (left padding, KV cache) of the held-out prompts, and the teacher-forced
pass, for a trained model. Writes bench/eval.json.

    python scripts/bench_eval.py [--model runs/quickstart/model] [--config configs/quickstart.yaml]
        [--conversations 200] [--max-new-tokens 128] [--batch-sizes 50,100]

Needs a finished `make train` (the model and its held-out prompts, eval_prompts.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instructify import config as config_lib  # noqa: E402
from instructify.evals import conformance  # noqa: E402
from instructify.training.model import load  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--model", help="model folder (default: <output_dir>/model)")
    p.add_argument("--conversations", type=int, default=200)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-sizes", default="50,100")
    p.add_argument("--out", default="bench/eval.json")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. output_dir=runs/other")
    args = p.parse_args()

    cfg = config_lib.load(args.config, args.overrides)
    out_dir = Path(cfg.output_dir)
    folder = Path(args.model or out_dir / "model")
    prompts_file = out_dir / "eval_prompts.json"
    if not (folder / "config.json").is_file() or not prompts_file.is_file():
        print(f"error: {folder} or {prompts_file} missing; run `make train` first", file=sys.stderr)
        return 1
    prompts = json.loads(prompts_file.read_text())[: args.conversations]
    model, tokenizer = load(cfg.model, path=str(folder))
    conformance.generate(model, tokenizer, prompts[:4], 4, 4)  # warm-up: first-call allocations
    runs = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        t0 = time.perf_counter()
        replies = conformance.generate(model, tokenizer, prompts, args.max_new_tokens, batch_size)
        seconds = time.perf_counter() - t0
        m = conformance.summarize(replies)
        generated = sum(r.tokens + r.stopped for r in replies)
        runs.append(
            {
                "batch_size": batch_size,
                "seconds": round(seconds, 1),
                "conversations_per_s": round(len(prompts) / seconds, 2),
                "generated_tokens": generated,
                "generated_tokens_per_s": round(generated / seconds, 1),
                "stop_rate": m["stop_rate"],
                "runaway": m["runaway"],
            }
        )
        print(json.dumps(runs[-1]))
    t0 = time.perf_counter()
    tf = conformance.teacher_forced(model, tokenizer, prompts)
    teacher_forced = {"seconds": round(time.perf_counter() - t0, 1), **tf}
    print(json.dumps(teacher_forced))
    result = {
        "what": f"{len(prompts)} held-out conversations, greedy, max_new_tokens={args.max_new_tokens}",
        "model": str(folder),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{model.device.type}, {model.dtype}",
        "generation": runs,
        "teacher_forced": teacher_forced,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
