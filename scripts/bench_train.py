"""Training speed against plain TRL, side by side: `make bench`. Writes bench/results.json and bench/results.md.

    python scripts/bench_train.py [--config configs/quickstart.yaml] [--steps 6] [--rounds 2] [--own-steps 52]
        [--arms trl-defaults,trl-bf16,ours] [--variant "no-grouping=training.group_by_length=false" ...]

Two comparisons, each arm in its own process (so peak memory is its own), the first 2 steps of every run warm-up:
  fixed batches  every arm trains on the same batches: a seeded random draw of rows taken in order (the kernels'
                 speed on identical work); --rounds rounds, arms alternating so that a slower or faster spell of
                 the machine hits all of them.
  own order      each arm in the order its users get: TRL's random order for --steps steps (a random draw is
                 representative from the first step), ours length-grouped for --own-steps steps (one whole cycle
                 of length groups: within a group batches run longest first, so a short window would flatter it).
The headline ratio is the lower of the two. A TRL arm has --arm-seconds over all its runs: where its dtype is
emulated (bf16 on an AVX2 CPU: minutes a step) a run ends at the budget after 2 steps, one of them timed, and its
later runs are skipped, so the bench still finishes; `steps timed` in the table says what was measured. Arms:
  trl-defaults    scripts/bench_trl.py, SFTTrainer defaults; TRL loads models in float32 unless told otherwise,
                  with SDPA attention (what from_pretrained gives a plain script)
  trl-bf16        the same with the weights in bfloat16
  trl-bf16-eager  a lever, not a baseline: trl-bf16 with our CPU attention (eager)
  ours            instructify sft (scripts/bench_ours.py on the fixed batches), our settings
  <variant>       ours with config overrides, to measure one lever at a time (bench/NOTES.md)
Peak memory is the largest within the training steps (evaluation and set-up left out), RSS on CPU, allocated
memory on GPU. After the last step every run scores the same held-out conversations teacher-forced (eval_loss,
stop_token_prob).
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
    "trl-defaults": ["model.dtype=float32", "model.attn_implementation=sdpa"],
    "trl-bf16": ["model.dtype=bfloat16", "model.attn_implementation=sdpa"],
}
TRL_LEVERS = {"trl-bf16-eager": ["model.dtype=bfloat16", "model.attn_implementation=eager"]}
TRL_ARMS = {**BASELINES, **TRL_LEVERS}
EVAL_CONVERSATIONS = 64
SUMMED = ("tokens_per_s", "trained_tokens_per_s", "step_seconds_mean")


def run_arm(
    arm: str, overrides: list[str], args, out: Path, fixed: bool, steps: int, seconds: float = 0
) -> dict:
    """One training run in a fresh process; returns its speed.json plus the final teacher-forced scores. `seconds`
    bounds a TRL arm's training (scripts/bench_trl.py --seconds)."""
    common = [f"output_dir={out}", "overwrite=true", f"eval.monitor_conversations={EVAL_CONVERSATIONS}"]
    if arm in TRL_ARMS:
        cmd = [sys.executable, "scripts/bench_trl.py", "--config", args.config, "--steps", str(steps)]
        cmd += ["--fixed-batches"] * fixed
        cmd += ["--seconds", str(seconds)] * bool(seconds)
        cmd += ["--out", str(out / "speed.json"), *common, *args.overrides, *overrides]
    else:
        cmd = [
            sys.executable,
            *(["scripts/bench_ours.py", "--steps", str(steps)] if fixed else ["-m", "instructify", "sft"]),
        ]
        cmd += ["--config", args.config, *common]
        cmd += [
            f"training.max_steps={steps}",
            "training.logging_steps=1",
            "training.save_steps=0",
            f"eval.monitor_every={steps}",  # a teacher-forced check at step 0 and at the last step
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
    if arm not in TRL_ARMS:  # the monitor's last check
        last = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()][-1]
        result["eval"] = {k: last[k] for k in ("eval_loss", "stop_token_prob", "stop_token_top1")}
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({k: result.get(k) for k in ("tokens_per_s", "step_seconds_mean", "train_peak_rss_mb")}))
    return result


def combine(runs: list[dict]) -> dict:
    """Rounds of one arm: the median of the rates, the largest peak memory, every run's figures kept."""
    out = {k: round(statistics.median(r[k] for r in runs), 2) for k in SUMMED}
    out["padding_share"] = runs[0]["padding_share"]
    out["tokens_per_step"] = round(statistics.median(r["tokens"] / r["steps_timed"] for r in runs), 1)
    out["steps_timed"] = runs[0]["steps_timed"]
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
    cols = [
        "arm",
        "tokens/s",
        "trained tokens/s",
        "s/step",
        "tokens/step",
        "steps timed",
        "padding",
        "peak RSS MB",
    ]
    gpu = any("train_peak_gpu_mb" in a for a in arms.values())
    mfu = any("mfu_full" in a for a in arms.values())
    cols += ["peak GPU MB"] * gpu + ["MFU 6N", "MFU 4N"] * mfu + ["eval_loss", "stop p", f"x {reference}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    base = arms[reference]["tokens_per_s"]
    for name, a in arms.items():
        e = a.get("eval") or {}
        row = [
            name,
            a["tokens_per_s"],
            a["trained_tokens_per_s"],
            a["step_seconds_mean"],
            a["tokens_per_step"],
        ]
        row.append(a["steps_timed"])
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
    p.add_argument("--rounds", type=int, default=2, help="rounds of the fixed-batch comparison")
    p.add_argument(
        "--own-steps",
        type=int,
        default=52,
        help="steps of ours in its own (length-grouped) order; 0: no own-order comparison (any arm)",
    )
    p.add_argument("--arms", default="trl-defaults,trl-bf16,ours")
    p.add_argument(
        "--variant", action="append", default=[], help="NAME=override[,override...]: ours with them"
    )
    p.add_argument(
        "--arm-seconds",
        type=float,
        default=480,
        help="seconds each TRL arm may take over all its runs: a run ends at the budget (after 2 steps), later "
        "runs are skipped (0: no bound)",
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
        if name in TRL_ARMS:
            arms[name] = TRL_ARMS[name]
        elif name != "ours" and not arms[name]:
            known = ", ".join([*TRL_ARMS, "ours"])
            p.error(f"unknown arm {name!r}: use {known}, or --variant {name}=<overrides>")
    started = time.perf_counter()
    runs_dir = Path(args.runs_dir)
    spent = dict.fromkeys(arms, 0.0)  # a TRL arm's seconds so far, against --arm-seconds
    skipped: dict[str, list[str]] = {name: [] for name in arms}

    def run(name: str, label: str, fixed_: bool, steps: int) -> list[dict]:
        left = args.arm_seconds - spent[name] if name in TRL_ARMS and args.arm_seconds else 0
        if name in TRL_ARMS and args.arm_seconds and left <= 0:
            skipped[name].append(label)  # its budget is spent: what it measured stands for it
            return []
        t0 = time.perf_counter()
        result = run_arm(name, arms[name], args, runs_dir / f"{name}-{label}", fixed_, steps, left)
        spent[name] += time.perf_counter() - t0
        return [result]

    fixed: dict[str, list[dict]] = {name: [] for name in arms}
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))  # alternate who goes first
        for name in order:
            fixed[name] += run(name, f"fixed-{r}", True, args.steps)
    own: dict[str, list[dict]] = {}
    for name in arms if args.own_steps else []:  # 0: the fixed batches only, every arm
        own[name] = run(name, "own", False, args.steps if name in TRL_ARMS else args.own_steps)
    comparisons = {"fixed_batches": fixed, "own_order": own}
    combined = {kind: {n: combine(rs) for n, rs in c.items() if rs} for kind, c in comparisons.items() if c}
    ratios = {
        kind: {
            f"{a}/{b}": round(arms_[a]["tokens_per_s"] / arms_[b]["tokens_per_s"], 2)
            for a in arms_
            for b in BASELINES
            if b in arms_ and a not in TRL_ARMS
        }
        for kind, arms_ in combined.items()
    }
    headline = {
        key: min(r[key] for r in ratios.values() if key in r)
        for key in {k for r in ratios.values() for k in r}
    }
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.machine()} CPU"
    report = {
        "what": (
            f"{args.config}: fixed batches ({args.steps} steps per run, 2 warm-up, {args.rounds} rounds, "
            f"alternating) and each arm's own order (TRL random, {args.steps} steps; ours length-grouped, "
            f"{args.own_steps} steps)"
        ),
        "machine": f"{device}, {os.cpu_count()} cores, torch {torch.__version__}",
        "overrides": args.overrides,
        "seconds": round(time.perf_counter() - started),
        "headline": headline,  # the lower of the two comparisons' ratios
        "arm_seconds": args.arm_seconds,
        "skipped": {name: labels for name, labels in skipped.items() if labels},
        "ratios": ratios,
        **combined,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    sections = [f"# {report['what']}", report["machine"]]
    for kind, arms_ in combined.items():
        reference = next((a for a in BASELINES if a in arms_), next(iter(arms_)))
        sections += [f"## {kind.replace('_', ' ')}", table(arms_, reference)]
    for name, labels in report["skipped"].items():
        sections.append(
            f"{name}: {', '.join(labels)} skipped, its {args.arm_seconds:.0f} s spent (--arm-seconds)"
        )
    sections.append(f"headline (the lower of the two): {headline}")
    md = "\n\n".join(sections) + "\n"
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"headline: {headline}; wrote {out} and {out.with_suffix('.md')} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
