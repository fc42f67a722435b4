"""Training speed against plain TRL, side by side: `make bench`. Writes bench/results.json and bench/results.md.

    python scripts/bench_train.py [--config configs/quickstart.yaml] [--steps 8] [--rounds 2]
        [--arms trl-defaults,trl-bf16,ours] [--variant "no-grouping=training.group_by_length=false" ...]

Each arm trains the configuration's model, data, LoRA settings and max length for --steps optimizer steps, in its
own process (so peak memory is its own), arms alternating round by round so that a slower or faster spell of the
machine hits all of them. The first 2 steps of every run are warm-up and not timed. Arms:
  trl-defaults  scripts/bench_trl.py, SFTTrainer defaults; TRL loads models in float32 unless told otherwise
  trl-bf16      the same with the weights in bfloat16
  ours          python -m train sft, our settings
  <variant>     ours with config overrides, to measure one lever at a time (bench/NOTES.md)
Peak memory is the largest within the training steps (evaluation and set-up left out), RSS on CPU, allocated
memory on GPU. After the last step every run scores the same held-out conversations teacher-forced (eval_loss, stop_token_prob).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINES = {
    "trl-defaults": ["model.dtype=float32"],
    "trl-bf16": ["model.dtype=bfloat16"],
}
EVAL_CONVERSATIONS = 64
SUMMED = ("tokens_per_s", "trained_tokens_per_s", "step_seconds_mean")


def run_arm(arm: str, overrides: list[str], args, out: Path) -> dict:
    """One training run in a fresh process; returns its speed.json plus the final teacher-forced scores."""
    common = [f"output_dir={out}", "overwrite=true", f"eval.monitor_conversations={EVAL_CONVERSATIONS}"]
    if arm in BASELINES:
        cmd = [sys.executable, "scripts/bench_trl.py", "--config", args.config, "--steps", str(args.steps)]
        cmd += ["--out", str(out / "speed.json"), *common, *args.overrides, *overrides]
    else:
        cmd = [sys.executable, "-m", "train", "sft", "--config", args.config, *common]
        cmd += [
            f"training.max_steps={args.steps}",
            "training.logging_steps=1",
            "training.save_steps=0",
            f"eval.monitor_every={args.steps}",  # a teacher-forced check at step 0 and at the last step
            "eval.monitor_generate_every=0",
            *args.overrides,
            *overrides,
        ]
    env = {**os.environ, **dict(o[4:].split("=", 1) for o in overrides if o.startswith("env:"))}
    cmd = [c for c in cmd if not c.startswith("env:")]
    print(f"--- {arm}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        code = subprocess.call(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        sys.exit(f"error: arm {arm} failed (exit {code}); see {log}")
    result = json.loads((out / "speed.json").read_text())
    if arm not in BASELINES:  # the monitor's last check
        last = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()][-1]
        result["eval"] = {k: last[k] for k in ("eval_loss", "stop_token_prob", "stop_token_top1")}
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({k: result.get(k) for k in ("tokens_per_s", "step_seconds_mean", "train_peak_rss_mb")}))
    return result


def combine(runs: list[dict]) -> dict:
    """Rounds of one arm: the median of the rates, the largest peak memory, every run's figures kept."""
    out = {k: round(statistics.median(r[k] for r in runs), 2) for k in SUMMED}
    out["padding_share"] = runs[0]["padding_share"]
    for key in ("train_peak_rss_mb", "train_peak_gpu_mb", "peak_rss_mb"):
        if key in runs[0]:
            out[key] = max(r[key] for r in runs)
    for key in ("mfu_full", "mfu_lora"):
        if runs[0].get(key) is not None:
            out[key] = round(statistics.median(r[key] for r in runs), 4)
    out["eval"] = runs[-1].get("eval")
    out["runs"] = runs
    return out


def table(arms: dict, reference: str) -> str:
    cols = ["arm", "tokens/s", "trained tokens/s", "s/step", "padding", "peak RSS MB"]
    gpu = any("train_peak_gpu_mb" in a for a in arms.values())
    mfu = any("mfu_full" in a for a in arms.values())
    cols += ["peak GPU MB"] * gpu + ["MFU 6N", "MFU 4N"] * mfu + ["eval_loss", "stop p", f"x {reference}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    base = arms[reference]["tokens_per_s"]
    for name, a in arms.items():
        e = a.get("eval") or {}
        row = [name, a["tokens_per_s"], a["trained_tokens_per_s"], a["step_seconds_mean"]]
        row += [f"{a['padding_share']:.1%}", round(a["train_peak_rss_mb"])]
        row += [round(a.get("train_peak_gpu_mb", 0))] * gpu
        row += [f"{a.get('mfu_full', 0):.1%}", f"{a.get('mfu_lora', 0):.1%}"] * mfu
        row += [f"{e['eval_loss']:.3f}" if e else "", f"{e['stop_token_prob']:.3f}" if e else ""]
        row.append(f"{a['tokens_per_s'] / base:.2f}")
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run, the first 2 not timed")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arms", default="trl-defaults,trl-bf16,ours")
    p.add_argument(
        "--variant", action="append", default=[], help="NAME=override[,override...]: ours with them"
    )
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--runs-dir", default="runs/bench")
    p.add_argument(
        "overrides", nargs="*", help="config overrides for every arm, e.g. training.per_device_batch_size=16"
    )
    args = p.parse_args()
    if args.steps < 3:
        p.error("--steps must be at least 3 (2 warm-up steps are not timed)")

    arms = {name: [] for name in args.arms.split(",")}
    for v in args.variant:
        name, _, overrides = v.partition("=")
        arms[name] = overrides.split(",")
    for name in arms:
        if name in BASELINES:
            arms[name] = BASELINES[name]
        elif name != "ours" and not arms[name]:
            p.error(
                f"unknown arm {name!r}: use trl-defaults, trl-bf16, ours, or --variant {name}=<overrides>"
            )
    started = time.perf_counter()
    results: dict[str, list[dict]] = {name: [] for name in arms}
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))  # alternate who goes first
        for name in order:
            results[name].append(run_arm(name, arms[name], args, Path(args.runs_dir) / f"{name}-{r}"))
    combined = {name: combine(runs) for name, runs in results.items()}
    reference = next((a for a in ("trl-defaults", "trl-bf16") if a in combined), next(iter(combined)))
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.machine()} CPU"
    report = {
        "what": f"{args.config}, {args.steps} steps per run (2 warm-up), {args.rounds} rounds, alternating",
        "machine": f"{device}, {os.cpu_count()} cores, torch {torch.__version__}",
        "overrides": args.overrides,
        "seconds": round(time.perf_counter() - started),
        "ratios": {
            f"{a}/{b}": round(combined[a]["tokens_per_s"] / combined[b]["tokens_per_s"], 2)
            for a in combined
            for b in BASELINES
            if b in combined and a not in BASELINES
        },
        "arms": combined,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = f"# {report['what']}\n\n{report['machine']}\n\n{table(combined, reference)}\n"
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"ratios: {report['ratios']}; wrote {out} and {out.with_suffix('.md')} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
