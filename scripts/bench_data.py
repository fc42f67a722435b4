"""make bench-data: conversations per second to read, validate, render and tokenise chitchat (the quickstart data
and tokenizer), and the time of a cached re-run. Writes bench/data.json and prints a table."""

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoTokenizer  # noqa: E402

from instructify import config  # noqa: E402
from instructify.chat import template  # noqa: E402
from instructify.data import prepare  # noqa: E402
from instructify.training import model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    cfg = config.load(ROOT / "configs" / "quickstart.yaml")
    tokenizer = AutoTokenizer.from_pretrained(model.resolve(cfg.model.name))
    tokens = template.add_chat_tokens_from(cfg.template, None, tokenizer)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        rows, prompts, report = prepare.build(cfg, tokenizer, tokens)
        runs.append(time.perf_counter() - t0)
    build_s = min(runs)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["INSTRUCTIFY_CACHE"] = cache
        cfg_tmp = config.load(ROOT / "configs" / "quickstart.yaml", [f"output_dir={cache}/run"])
        t0 = time.perf_counter()
        prepare.prepare(cfg_tmp, tokenizer, tokens)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached = prepare.prepare(cfg_tmp, tokenizer, tokens)
        cached_s = time.perf_counter() - t0
        assert cached.cached
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "conversations": report.read,
        "training_examples": len(rows),
        "held_out_prompts": len(prompts),
        "build_seconds_best_of_3": round(build_s, 3),
        "conversations_per_second": round(report.read / build_s),
        "first_prepare_seconds": round(first_s, 3),
        "cached_prepare_seconds": round(cached_s, 3),
        "target_conversations_per_second": 1500,
        "target_cached_seconds": 2.0,
    }
    out = ROOT / "bench" / "data.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| metric | value |\n|---|---|")
    for k, v in result.items():
        print(f"| {k} | {v} |")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
