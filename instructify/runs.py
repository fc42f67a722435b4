"""The run folder: a previous run is never replaced by accident, each run records what produced it, and resuming
picks the newest checkpoint that was completely written."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from instructify.config import Config, to_dict

log = logging.getLogger(__name__)

MARKER = "COMPLETE"  # written last into a checkpoint folder: one without it was cut off while saving
RUN_FILES = ("config.yaml", "run.json", "eval_prompts.json", "rejected.jsonl", "curve.jsonl", "report.json")
RUN_FILES += ("report.md", "metrics.png", "curve.png", "data_parallel.jsonl")
RUN_DIRS = ("adapter", "model", "checkpoints", "push")
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")
# A resume may change these (a longer run, another eval); anything else in the config must match.
RESUMABLE = ("training.max_steps", "training.resume", "training.save_steps", "training.save_total_limit")
RESUMABLE += ("training.report_to", "training.logging_steps", "overwrite", "output_dir")


class RunError(RuntimeError):
    pass


def holds_run(out: Path) -> bool:
    return any((out / name).exists() for name in ("config.yaml", "adapter", "checkpoints"))


def claim(out: Path, overwrite: bool, resume: str) -> None:
    """Refuse a folder holding a previous run unless resuming it or told to overwrite it (then clear it)."""
    if not holds_run(out) or resume != "no":
        return
    if not overwrite:
        raise RunError(
            f"{out}: holds a previous run (config.yaml, adapter/ or checkpoints/); pass overwrite=true to replace "
            "it, training.resume=auto to continue it, or another output_dir"
        )
    log.warning("%s: overwrite=true, removing the previous run", out)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for path in out.glob("samples-*.jsonl"):
        path.unlink()
    for name in RUN_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def record(cfg: Config, data_fingerprint: str, processes: list[dict] | None = None) -> dict:
    """What produced a run: resolved config, data fingerprint, package versions, git commit, and the processes
    that trained it (world size, distributed type, each rank's host and device). No environment."""
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": to_dict(cfg),
        "data_fingerprint": data_fingerprint,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "packages": versions(),
        **({"distributed": _distributed(processes)} if processes else {}),
    }


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu() -> str:
    """The CPU's model and the flags that decide its matmul speed (AVX2, AVX-512, AVX-512-BF16, AMX)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), ""
    )
    flags = set(info.split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
    capped = os.environ.get("ATEN_CPU_CAPABILITY")  # kernels held below what the flags allow
    return f"{model or platform.machine()}, {' '.join(f for f in wanted if f in flags)}" + (
        f" (ATEN_CPU_CAPABILITY={capped})" if capped else ""
    )


def _distributed(processes: list[dict]) -> dict:
    first = processes[0]
    return {
        "world_size": first["world_size"],
        "distributed_type": first["distributed_type"],
        "backend": first["backend"],
        "processes": [{k: p[k] for k in ("rank", "local_rank", "host", "device")} for p in processes],
    }


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict) and value and key != "columns":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _recorded(run: dict) -> dict:
    """The fields of a run.json that a resume compares, with what an absent one means."""
    return {"data_fingerprint": None, "distributed": {}, "config": {}, "packages": {}, **run}


def check_resume(previous: dict, current: dict) -> list[str]:
    """Refuse a resume on other data or another training setup; return warnings for lesser differences.
    Both records are read the same way: a key an older run.json lacks reads as absent on either side."""
    previous, current = _recorded(previous), _recorded(current)
    if previous["data_fingerprint"] != current["data_fingerprint"]:
        raise RunError(
            "training.resume: the data (or tokenizer, template, data settings) differs from the run being "
            "resumed; restore it, or start a new run (another output_dir, or overwrite=true)"
        )
    worlds = [r["distributed"].get("world_size", 1) for r in (previous, current)]
    if worlds[0] != worlds[1]:
        raise RunError(
            f"training.resume: the run was trained by {worlds[0]} process(es), this launch has {worlds[1]}: the "
            "global batch and the data each step sees would change. Resume with the same number of processes"
        )
    old, new = _flatten(previous["config"]), _flatten(current["config"])
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUMABLE)
    refused = [k for k in changed if not k.startswith("eval.")]
    if refused:
        raise RunError(
            "training.resume: the config differs from the run being resumed in "
            + ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in refused)
            + "; restore those keys, or start a new run"
        )
    old_packages = previous["packages"]
    versions = [
        f"{name} {old_packages.get(name)} -> {v}"
        for name, v in current["packages"].items()
        if old_packages.get(name) != v
    ]
    return [f"resuming with changed {k}" for k in changed] + (
        [f"resuming with other package versions: {', '.join(versions)}"] if versions else []
    )


def newest_checkpoint(checkpoints: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint folder holding its completeness marker, and why newer ones were skipped."""
    found = [p for p in checkpoints.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    skipped = []
    for path in sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        if (path / MARKER).is_file():
            return path, skipped
        skipped.append(f"{path.name}: no {MARKER} marker, it was cut off while being saved")
    return None, skipped


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
