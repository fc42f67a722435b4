"""The `ours` arm of `make bench` on the fixed batches: `instructify sft`, except that the training rows are the
bench's fixed draw (scripts/bench_trl.py: fixed_rows), taken in order, so that every arm trains on the same batches.

    python scripts/bench_ours.py --config configs/quickstart.yaml --steps 6 [config overrides]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_trl import fixed_count, fixed_rows  # noqa: E402

from instructify import config as config_lib  # noqa: E402
from instructify.training import sft  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. training.save_steps=0")
    args = p.parse_args()
    cfg = config_lib.load(args.config, [*args.overrides, f"training.max_steps={args.steps}"])
    prepared = sft.setup(cfg)
    rows = prepared.data.train
    picked = rows.select(fixed_rows(len(rows), fixed_count(cfg, args.steps), cfg.training.seed))
    prepared = dataclasses.replace(prepared, data=dataclasses.replace(prepared.data, train=picked))
    sft.train(cfg, prepared, sampling="sequential")
    return 0


if __name__ == "__main__":
    sys.exit(main())
