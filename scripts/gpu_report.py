"""bench/gpu.json and bench/gpu.md from what scripts/gpu_check.sh measured on the GPU machine:

    python scripts/gpu_report.py --configs runs/gpu/configs.json --junit runs/gpu/configs.xml \
        --bench smollm2-135m=bench/gpu-smollm2-135m.json --bench llama-1b=bench/gpu-llama-1b.json

Per-config pass/fail (tests/test_gpu.py's outcome for each accelerate config and model, with its measured
differences from `single`), and per model shape the speed comparison of scripts/bench_train.py (tokens/s,
trained tokens/s, peak GPU memory, MFU for ours, TRL defaults and TRL bf16 on the same fixed batches).
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_train import BASELINES, table  # noqa: E402

CONFIGS = ("single", "ddp", "fsdp2", "zero2", "zero3")


def outcomes(junit: Path) -> dict[str, dict]:
    """tests/test_gpu.py::test_config[...] and tests/test_sharding.py outcomes by `config/model` or test name."""
    found = {}
    if not junit.is_file():
        return found
    for case in ET.parse(junit).iter("testcase"):
        name = case.get("name", "")
        failure = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if failure is None else ("skipped" if failure.tag == "skipped" else "failed")
        detail = (failure.get("message") or "")[:500] if failure is not None else None
        if name.startswith("test_config["):
            parts = name[len("test_config[") : -1].split("-")
            config = next(p for p in parts if p in CONFIGS)
            model = next(p for p in parts if p != config)
            name = f"{config}/{model}"
        found[name] = {"outcome": outcome, **({"detail": detail} if detail else {})}
    return found


def config_table(configs: dict, tests: dict) -> str:
    lines = [
        "| config | model | outcome | vs single: loss | LoRA | token rows | resume | export | s (run) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    runs = configs.get("runs", {})
    for key in sorted(
        set(runs) | {k for k in tests if "/" in k}, key=lambda k: (CONFIGS.index(k.split("/")[0]), k)
    ):
        r, t = runs.get(key, {}), tests.get(key, {"outcome": "not run"})
        vs = r.get("vs_single") or {}
        fmt = lambda v: f"{v:.2e}" if isinstance(v, float) else ("" if v is None else str(v))
        resume = r.get("resume", {}).get("exit")
        row = [*key.split("/"), t["outcome"], fmt(vs.get("loss_max_rel")), fmt(vs.get("lora_max_rel"))]
        row += [fmt(vs.get("rows_max_rel")), "ok" if resume == 0 else fmt(resume)]
        row += ["ok" if r.get("export", {}).get("ok") else ("" if "export" not in r else "failed")]
        row.append(str(r.get("run", {}).get("seconds", "")))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def salvage(shape: str, path: str) -> dict:
    """A bench cut off by its time limit writes no JSON: each finished run's own speed.json instead."""
    runs = {
        f.parent.name: json.loads(f.read_text())
        for f in sorted((ROOT / "runs" / f"bench-gpu-{shape}").glob("*/speed.json"))
    }
    keys = (
        "tokens_per_s",
        "trained_tokens_per_s",
        "step_seconds_mean",
        "train_peak_gpu_mb",
        "mfu_full",
        "mfu_lora",
    )
    return {"missing": path, "finished_runs": {name: {k: r.get(k) for k in keys} for name, r in runs.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", type=Path, default=ROOT / "runs" / "gpu" / "configs.json")
    p.add_argument("--junit", type=Path, default=ROOT / "runs" / "gpu" / "configs.xml")
    p.add_argument("--bench", action="append", default=[], help="SHAPE=bench_train.py's --out JSON")
    p.add_argument("--env", type=Path, help="gpu_requirements.py --installed --out JSON (package versions)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu.json")
    args = p.parse_args()

    configs = json.loads(args.configs.read_text()) if args.configs.is_file() else {}
    tests = outcomes(args.junit)
    shapes = {}
    for spec in args.bench:
        shape, _, path = spec.partition("=")
        shapes[shape] = json.loads(Path(path).read_text()) if Path(path).is_file() else salvage(shape, path)
    env = json.loads(args.env.read_text()) if args.env and args.env.is_file() else {}
    report = {
        "what": "scripts/gpu_check.sh: accelerate configs at one process (tests/test_gpu.py), sharded head/rows on "
        "the CPU (tests/test_sharding.py), and ours vs TRL on the same fixed batches (scripts/bench_train.py)",
        "machine": next((s["machine"] for s in shapes.values() if "machine" in s), None),
        "versions": env.get("versions"),
        "configs": {"tests": tests, **configs},
        "speed": shapes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    sections = [
        f"# {report['what']}",
        f"{report['machine']}",
        "## accelerate configs, one process",
        config_table(configs, tests),
    ]
    cpu = {k: v["outcome"] for k, v in tests.items() if "/" not in k}
    if cpu:
        sections.append("CPU checks: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    for shape, s in shapes.items():
        sections.append(f"## {shape}: {s.get('what', s.get('missing'))}")
        for kind in ("fixed_batches", "own_order"):
            if kind in s:
                reference = next((a for a in BASELINES if a in s[kind]), next(iter(s[kind])))
                sections += [f"### {kind.replace('_', ' ')}", table(s[kind], reference)]
        for name, r in s.get("finished_runs", {}).items():
            sections.append(f"- {name} (finished before the time limit): {json.dumps(r)}")
        if "headline" in s:
            sections.append(f"headline (the lower of the comparisons): {s['headline']}")
    md = "\n\n".join(sections) + "\n"
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
