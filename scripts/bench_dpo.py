"""Seconds per DPO step of an improve round at several improve.micro_batches: one round's pairs (its
own-pairs.jsonl), one start model, one seed, so every arm trains on the same pairs at each step and only the
micro-batching differs. Writes bench/dpo-micro.json.

    python scripts/bench_dpo.py --config configs/quickstart.yaml --start runs/qs-rpo/model \
        --pairs runs/qs-arith/round-1/own-pairs.jsonl --steps 8

`make bench-dpo` runs it on the config's run: start improve.start (or <output_dir>/model), pairs
<output_dir>/round-1/own-pairs.jsonl.
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
from instructify import improve, runs  # noqa: E402
from instructify.training import dpo, speed  # noqa: E402
from instructify.training.model import load  # noqa: E402


def arm(cfg: config_lib.Config, pairs: list[dict], micro: int) -> dict:
    """`steps` DPO steps of the round at `micro` micro-batches a step: rates, padding and the losses."""
    cfg = dataclasses.replace(cfg, improve=dataclasses.replace(cfg.improve, micro_batches=micro))
    model, tokenizer = load(cfg.model)
    trainer = dpo.trainer_for(cfg, model, tokenizer, pairs)
    clock = speed.Throughput(None, tokenizer.pad_token_id)
    trainer.add_callback(clock)
    t0 = time.perf_counter()
    trainer.train()
    losses = [round(e["loss"], 4) for e in trainer.state.log_history if "loss" in e]
    return {"micro_batches": micro, "seconds": round(time.perf_counter() - t0, 1), "losses": losses,
            **clock.summary()}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument(
        "--start", help="the round's start model folder (default: improve.start or <output_dir>/model)"
    )
    p.add_argument("--pairs", type=Path, help="a round's own-pairs.jsonl (default: <output_dir>/round-1's)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--micro", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--out", type=Path, default=Path("bench/dpo-micro.json"))
    args = p.parse_args()
    run = config_lib.load(args.config)
    args.start = args.start or run.improve.start or str(Path(run.output_dir) / "model")
    args.pairs = args.pairs or Path(run.output_dir) / "round-1" / "own-pairs.jsonl"
    if not args.pairs.is_file():
        p.error(f"{args.pairs}: no round's pairs; run `make improve` first or pass --pairs")
    pairs = [json.loads(line) for line in args.pairs.read_text().splitlines()]
    cfg = improve.round_config(
        dataclasses.replace(run, output_dir="runs/bench-dpo"), 1, Path(args.start), args.pairs
    )
    timed = dataclasses.replace(cfg.training, max_steps=args.steps, logging_steps=1)
    cfg = dataclasses.replace(cfg, training=timed)
    arms = [arm(cfg, pairs, m) for m in args.micro]
    result = {
        "what": f"{args.steps} DPO steps of {args.pairs}'s {len(pairs)} pairs from {args.start}, "
        f"{cfg.training.per_device_batch_size} pairs a step, at improve.micro_batches {args.micro}",
        "cpu": runs.cpu(),
        "arms": arms,
    }
    runs.write_json(args.out, result)
    for a in arms:
        print(a["micro_batches"], a["step_seconds_median"], a["padding_share"], a["losses"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
