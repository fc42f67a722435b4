"""Reading raw rows from local files, folders, globs, Hub datasets and the chitchat package."""

from __future__ import annotations

import csv
import glob
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from instructify.config import SourceConfig
from instructify.data.records import DataError

log = logging.getLogger(__name__)


FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")


def _jsonl(path: Path) -> Iterator[tuple[str, object]]:
    with path.open() as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield f"{path}:{i}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"{path}:{i}", _Unreadable(f"not valid JSON ({e.msg})", line.rstrip("\n"))


class _Unreadable:
    def __init__(self, reason: str, raw: str):
        self.reason, self.raw = reason, raw


def _json(path: Path) -> Iterator[tuple[str, object]]:
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the file or use .jsonl"
        ) from None
    if isinstance(rows, dict):  # {"id": row, ...}
        yield from ((f"{path}:{k}", v) for k, v in rows.items())
    elif isinstance(rows, list):
        yield from ((f"{path}:{i}", r) for i, r in enumerate(rows, 1))
    else:
        raise DataError(f"{path}: expected a JSON list (or object) of rows, got {type(rows).__name__}")


def _csv(path: Path) -> Iterator[tuple[str, object]]:
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f), 2):  # line 1 is the header
            # a column holding JSON (a message list) is decoded; plain text stays text
            yield f"{path}:{i}", {k: _maybe_json(v) for k, v in row.items()}


def _maybe_json(value: str) -> object:
    if value and value.lstrip()[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _parquet(path: Path) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
        yield f"{path}:{i}", row


READERS = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet}


def local_files(path: str) -> list[Path]:
    """A file, every supported file in a folder (sorted), or a glob's matches; [] when nothing is there."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.suffix.lower() in FILE_TYPES)
    return sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).suffix.lower() in FILE_TYPES)


def _chitchat() -> Iterator[tuple[str, object]]:
    """The chitchat package: {id: {"messages": [[{sender, text, ...}, ...], ...]}} -> two-speaker rows."""
    import chitchat_dataset

    path = Path(chitchat_dataset.__file__).parent / "dataset.json"
    for key, conv in json.loads(path.read_text()).items():
        turns = [{"speaker": u["sender"], "text": u["text"]} for group in conv["messages"] for u in group]
        yield f"{path}:{key}", {"id": key, "turns": turns}


def read_source(src: SourceConfig) -> Iterator[tuple[str, object]]:
    """(where, raw row) for every row of one source."""
    if src.path == "pypi:chitchat-dataset":
        yield from _chitchat()
        return
    files = local_files(src.path)
    if files:
        for f in files:
            reader = READERS.get(f.suffix.lower())
            if reader is None:
                raise DataError(
                    f"{f}: unsupported file type {f.suffix!r}; use one of {', '.join(FILE_TYPES)}"
                )
            yield from reader(f)
        return
    looks_local = src.path.startswith(("pypi:", ".", "/", "~")) or Path(src.path).suffix.lower() in FILE_TYPES
    if looks_local or any(c in src.path for c in "*?["):
        raise DataError(f"data source {src.path}: no such file, folder or glob match; check the path")
    import datasets

    ds = datasets.load_dataset(src.path, src.subset, split=src.split, revision=src.revision)
    for i, row in enumerate(ds):
        yield f"{src.path}[{src.split}]:{i}", row
