"""Where a training step's time goes on this CPU: `instructify sft` on the config for a few steps, the last ones
under torch.profiler; the time by phase (data, forward + backward, optimizer: the Trainer's own callbacks) and the
forward + backward's operator time by part of the model, told apart by the shapes each matmul takes (the 262k
head, LoRA's rank, the MLP's width, attention). Achieved GFLOP/s from the profiler's own FLOP count of the matmuls,
beside a large fp32/bf16 matmul's on the same kernels (this CPU's practical peak). Writes bench/profile-<isa>.json.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/profile_step.py --config configs/quickstart.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instructify import config as config_lib  # noqa: E402
from instructify import runs  # noqa: E402
from instructify.training import sft  # noqa: E402

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")


class Profile(TrainerCallback):
    """Phase times of every step; the steps after `warmup` under torch.profiler."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.prof, self.t = warmup, [], None, {}

    def on_step_begin(self, args, state, control, **kw):
        now = time.perf_counter()
        if "end" in self.t:
            self.t["data"] = now - self.t["end"]
        self.t["begin"] = now
        if state.global_step == self.warmup and self.prof is None:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                               record_shapes=True, with_flops=True)  # fmt: skip
            self.prof.__enter__()

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self.t["pre_opt"] = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kw):
        self.t["opt"] = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        t = self.t
        t["end"] = time.perf_counter()
        self.steps.append({"step": state.global_step, "data": t.get("data", 0.0),
                           "forward_backward": t["pre_opt"] - t["begin"], "optimizer": t["opt"] - t["pre_opt"],
                           "rest": t["end"] - t["opt"], "profiled": self.prof is not None})  # fmt: skip

    def on_train_end(self, args, state, control, **kw):
        if self.prof is not None:
            self.prof.__exit__(None, None, None)


def part(name: str, shapes: list, cfg, rank: int) -> str:
    """Which part of the model an operator belongs to, by its name and the shapes it takes."""
    dims = {d for s in shapes if isinstance(s, (list, tuple)) for d in s}
    if any(abs(d - cfg.vocab_size) < 64 for d in dims):  # the vocabulary, new ChatML rows included
        return "head matmuls (vocabulary)" if name in MATMULS else "head and embedding: other"
    if name not in MATMULS:
        return "elementwise, norms, softmax, copies"
    if rank in dims:
        return "LoRA matmuls"
    if cfg.intermediate_size in dims:
        return "MLP matmuls (frozen)"
    if name == "aten::bmm":  # batched over heads: the scores and their mixing of the values
        return "attention scores and mixing"
    return "attention projections (frozen)"


def peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an n x n matmul in `dtype` on the current kernels: the practical peak."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return round(2 * n**3 * reps / (time.perf_counter() - t0) / 1e9, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="profiled steps")
    p.add_argument("--out", help="default: bench/profile-<cpu capability>.json")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    overrides = [f"training.max_steps={args.warmup + args.steps}", "training.save_steps=0", "eval.monitor_every=0",
                 "eval.monitor_generate_every=0", "output_dir=runs/profile", "overwrite=true", *args.overrides]  # fmt: skip
    cfg = config_lib.load(args.config, overrides)
    prepared = sft.setup(cfg)
    meter = Profile(args.warmup)
    sft.train(cfg, prepared, callbacks=[meter])
    profiled = [s for s in meter.steps if s["profiled"]]
    n = len(profiled)
    phases = {
        k: round(sum(s[k] for s in profiled) / n, 3)
        for k in ("data", "forward_backward", "optimizer", "rest")
    }
    text_cfg = prepared.model.config.get_text_config()
    parts: dict = defaultdict(lambda: {"seconds": 0.0, "gflop": 0.0})
    for e in meter.prof.key_averages(group_by_input_shape=True):
        if e.key.startswith("aten::") and e.self_cpu_time_total > 0:
            entry = parts[part(e.key, e.input_shapes or [], text_cfg, cfg.lora.r)]
            entry["seconds"] += e.self_cpu_time_total / 1e6 / n
            entry["gflop"] += (e.flops or 0) / 1e9 / n
    by_part = {k: {"seconds": round(v["seconds"], 3), "gflop": round(v["gflop"], 1),
                   "gflop_per_s": round(v["gflop"] / v["seconds"], 1) if v["seconds"] and v["gflop"] else None}
               for k, v in sorted(parts.items(), key=lambda kv: -kv[1]["seconds"])}  # fmt: skip
    step = sum(phases.values())
    gflop = sum(v["gflop"] for v in parts.values())
    dtype = prepared.model.dtype
    result = {
        "what": f"{args.config}, steps {args.warmup + 1}-{args.warmup + args.steps} profiled (mean per step)",
        "cpu": runs.cpu(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "step_seconds": round(step, 3),
        "phases": phases,
        "operators_by_part": by_part,
        "matmul_gflop_per_step": round(gflop, 1),
        "achieved_gflop_per_s": round(gflop / step, 1),
        "peak_matmul_gflop_per_s": {"float32": peak(torch.float32), "bfloat16": peak(torch.bfloat16)},
        "top_operators": [
            {"op": e.key, "seconds": round(e.self_cpu_time_total / 1e6 / n, 3), "calls": e.count // n}
            for e in sorted(meter.prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]
        ],
    }
    result["top_operators_by_shape"] = [
        {"op": e.key, "shapes": str(e.input_shapes)[:160], "seconds": round(e.self_cpu_time_total / 1e6 / n, 3),
         "calls": e.count // n, "part": part(e.key, e.input_shapes or [], text_cfg, cfg.lora.r)}
        for e in sorted(meter.prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)[:25]
    ]  # fmt: skip
    out = Path(args.out or f"bench/profile-{result['capability'].lower()}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "top_operators"}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
