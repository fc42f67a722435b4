"""Results of the models a run does not change (the base, the base in-context, the reference), kept across runs.

A run evaluates them the same way each time: at the tool config's settings that is about 50 minutes of a 2-core
CPU before the first training step. An entry is reused when its key matches: which result (report, instructions
or tools) of which role, the model source and its version (a pypi: package's version, a Hub revision), the dtype,
the settings the run folder already compares, and what the model is shown (the chat template, the in-context
prompt). A local folder is never stored: it can change under the same name. Each entry keeps its provenance (the
commit, the CPU and its flags, the package versions, the date) so a report can say where a reused row was
measured. `eval.stored: ''` measures everything again. Our own code: datasets' cache keys on data, not on results.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import logging
import re
from pathlib import Path

from instructify import runs

log = logging.getLogger(__name__)

VERSION = 1  # raise when a change of the eval code changes what a stored entry would hold
FILES = ("report", "instructions", "tools")


def source_version(source: str, revision: str | None = None) -> str | None:
    """What pins a model source, or None when nothing does (a local folder, a .gguf file: never stored)."""
    if source.startswith("pypi:"):
        try:
            return importlib.metadata.version(source[len("pypi:") :])
        except importlib.metadata.PackageNotFoundError:
            return None
    if Path(source).expanduser().exists() or source.endswith(".gguf"):
        return None
    return revision or "main"  # a Hub id


def fingerprint(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else None


def key(file: str, name: str, source: str, version: str, dtype: str, settings: dict, shown: dict) -> dict:
    """`shown`: fingerprints of what the model is given besides the prompts (chat template, in-context prompt)."""
    assert file in FILES, file
    return {"version": VERSION, "file": file, "name": name, "model_path": source, "model_version": version,
            "dtype": dtype, "settings": settings, "shown": shown}  # fmt: skip


def path_of(folder: Path, k: dict) -> Path:
    digest = hashlib.sha256(json.dumps(k, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "-", k["name"].lower()).strip("-")
    return Path(folder) / k["file"] / f"{slug}-{digest}.json"


def load(folder: str | Path | None, k: dict) -> dict | None:
    """The stored {"key", "entry", "samples", "provenance"} for `k`, or None (no folder, no entry, or a file whose
    key differs: a hash collision or a hand edit)."""
    if not folder:
        return None
    path = path_of(Path(folder), k)
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s: not JSON, measured again", path)
        return None
    return stored if stored.get("key") == k else None


def save(folder: str | Path | None, k: dict, entry: dict, samples: list[dict] | None = None) -> Path | None:
    if not folder:
        return None
    path = path_of(Path(folder), k)
    path.parent.mkdir(parents=True, exist_ok=True)
    provenance = {
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": runs._git_commit(),
        "machine": runs.cpu(),
        "packages": runs.versions(),
    }
    stored = {"key": k, "entry": entry, **({"samples": samples} if samples is not None else {})}
    path.write_text(json.dumps({**stored, "provenance": provenance}, indent=1, ensure_ascii=False) + "\n")
    return path
