"""Greedy vs sampled decoding of a trained model, to decide what its exported generation_config says: the
conformance eval (stop, loops, reply length) and the instruction check, both ways, on the run's held-out prompts.
Writes <run>/decoding/ (report.json, instructions.json) and bench/decoding.json.

    python scripts/bench_decoding.py [--run runs/quickstart] [--temperature 0.8] [--top-p 0.95]

Needs a finished `make train` (the model and its held-out prompts, eval_prompts.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instructify import config as config_lib  # noqa: E402
from instructify import pipeline  # noqa: E402
from instructify.evals import (
    conformance,  # noqa: E402
    instructions,  # noqa: E402
)
from instructify.training.model import load  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--out", type=Path, default=Path("bench/decoding.json"))
    args = p.parse_args()

    cfg = config_lib.load(str(args.run / "config.yaml"))
    out = args.run / "decoding"
    out.mkdir(exist_ok=True)
    prompts = json.loads((args.run / "eval_prompts.json").read_text())
    folder = args.run / "model"
    model, tokenizer = load(cfg.model, path=str(folder))
    ways = {
        "greedy": dataclasses.replace(cfg.eval, do_sample=False),
        "sampled": dataclasses.replace(
            cfg.eval, do_sample=True, temperature=args.temperature, top_p=args.top_p
        ),
    }
    for name, e in ways.items():
        run_cfg = dataclasses.replace(cfg, output_dir=str(out), eval=e)
        pipeline.run_eval(run_cfg, model, tokenizer, prompts, name, str(folder))
        pipeline.check_instructions(run_cfg, name, model, tokenizer, str(folder))

    report, checked = conformance.read_report(out), instructions.read(out)
    keep = ("stop_rate", "clean_stop_rate", "loop_rate", "runaway_rate", "reply_tokens", "n", "settings")
    result = {
        "what": f"{folder}, {len(prompts[: cfg.eval.num_conversations])} held-out prompts and "
        f"{checked['greedy']['n']} instruction-check items, each way; scripts/bench_decoding.py",
        "entries": {
            name: {
                **{k: report[name][k] for k in keep if k in report[name]},
                "settings": {k: v for k, v in report[name]["settings"].items() if k != "prompts"},
                "instructions": {
                    k: v for k, v in checked[name].items() if k not in ("replies", "model_path")
                },
            }
            for name in ways
        },
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, entry in result["entries"].items():
        print(
            f"{name}: stop {entry['stop_rate']:.1%}, loops {entry['loop_rate']:.1%}, median reply "
            f"{entry['reply_tokens']['median']} tokens; instruction check {entry['instructions']['score']:.1%}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
