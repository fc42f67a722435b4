"""Tokenise the training data once and cache it: `instructify prepare`, reused by `sft` and `inspect`.

The cache key covers everything the tokens depend on: the data (file contents, or the Hub id and revision), the
tokenizer and template, the ChatML token ids and the data settings. A cached re-run reads Arrow files from disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets

from instructify.chat import template
from instructify.config import Config, DataConfig, cache_dir
from instructify.data import mixture, records, sources, splits

log = logging.getLogger(__name__)
CACHE_VERSION = "2"  # bump when the row layout or the encoder changes


@dataclass
class Prepared:
    train: datasets.Dataset  # messages (JSON), input_ids, assistant_masks: exactly what the trainer trains on
    eval_prompts: list[dict]
    report: dict  # the load report's counts and lines
    cached: bool
    fingerprint: str = ""  # data content + tokenizer + template + data settings: the cache key


def _source_fingerprint(src) -> str:
    h = hashlib.sha256(json.dumps(asdict(src), sort_keys=True).encode())
    if src.path == "pypi:chitchat-dataset":
        import chitchat_dataset

        files = [Path(chitchat_dataset.__file__).parent / "dataset.json"]
    else:
        files = sources.local_files(src.path)
    for f in files:  # content, not mtimes: a copied or touched file is the same data
        h.update(str(f).encode())
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def fingerprint(cfg: DataConfig, tokenizer, tokens: template.ChatTokens, special_text: str) -> str:
    h = hashlib.sha256(CACHE_VERSION.encode())
    for src in cfg.sources:
        h.update(_source_fingerprint(src).encode())
    settings = {k: v for k, v in asdict(cfg).items() if k != "sources"}
    h.update(json.dumps([settings, special_text, asdict(tokens)], sort_keys=True, default=str).encode())
    h.update((tokenizer.chat_template or "").encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(tokenizer.get_vocab()).encode())
    return h.hexdigest()[:24]


def build(
    cfg: Config, tokenizer, tokens: template.ChatTokens
) -> tuple[list[dict], list[dict], records.LoadReport]:
    """Load, validate, split, encode and fit: the rows the trainer trains on, and the held-out prompts."""
    report = records.LoadReport()
    forbidden = template.special_texts(tokenizer) if cfg.template.special_text == "reject" else ()
    convs = mixture.load(cfg.data, forbidden, report, cfg.template.system_prompt)
    train_convs, held_out = splits.split(convs, cfg.data.eval_share, cfg.data.seed)
    if cfg.data.train_size is not None:
        train_convs = train_convs[: cfg.data.train_size]

    def encode(cs):
        return template.encode(tokenizer, [c.messages for c in cs], tokens, cfg.data.max_length)

    rows = splits.fit_all(train_convs, encode(train_convs), cfg.data.max_length, cfg.data.overlength, report)
    report.kept = len(rows)
    prompts = splits.eval_prompts(held_out, encode(held_out), cfg.data.max_length, cfg.data.seed)
    return rows, prompts, report


def _to_dataset(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "messages": [
                json.dumps(r["messages"]) for r in rows
            ],  # JSON text: roles vary, Arrow wants one schema
            "input_ids": [r["input_ids"] for r in rows],
            "assistant_masks": [r["assistant_masks"] for r in rows],
        }
    )


def prepare(cfg: Config, tokenizer, tokens: template.ChatTokens, use_cache: bool = True) -> Prepared:
    """Cached `build`; writes rejected.jsonl in the run folder and stops when too many rows were rejected."""
    out_dir = Path(cfg.output_dir)
    sources = ", ".join(s.path for s in cfg.data.sources)
    key = fingerprint(cfg.data, tokenizer, tokens, cfg.template.special_text)
    folder = cache_dir() / "data" / key
    if use_cache and (folder / "done").is_file():
        report = json.loads((folder / "report.json").read_text())
        if (folder / "rejected.jsonl").is_file():
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "rejected.jsonl", out_dir / "rejected.jsonl")
        prompts = json.loads((folder / "eval_prompts.json").read_text())
        return Prepared(datasets.load_from_disk(str(folder / "train")), prompts, report, True, key)

    rows, prompts, load_report = build(cfg, tokenizer, tokens)
    load_report.write_rejected(out_dir / "rejected.jsonl")
    mixture.check_rejected(load_report, cfg.data.max_rejected, sources)
    if not rows:
        raise records.DataError(
            f"{sources}: no usable training conversations:\n  " + "\n  ".join(load_report.lines())
        )
    report = {
        "read": load_report.read,
        "kept": load_report.kept,
        "rejected": dict(load_report.rejected),
        "too_long": load_report.too_long,
        "truncated": load_report.truncated,
        "lines": load_report.lines(),
    }
    train = _to_dataset(rows)
    if use_cache:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        train.save_to_disk(str(tmp / "train"))
        (tmp / "eval_prompts.json").write_text(json.dumps(prompts))
        (tmp / "report.json").write_text(json.dumps(report))
        shutil.copyfile(out_dir / "rejected.jsonl", tmp / "rejected.jsonl")
        (tmp / "done").write_text(key)  # written last: a cache entry without it is ignored
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        train = datasets.load_from_disk(str(folder / "train"))
    return Prepared(train, prompts, report, False, key)


def length_stats(lengths: list[int], batch_size: int, seed: int = 0) -> dict:
    """Token-length percentiles, and the padding share at `batch_size` for random and length-grouped batches."""
    s = sorted(lengths)
    pct = {f"p{p}": s[min(len(s) - 1, int(p / 100 * len(s)))] for p in (50, 90, 99)}

    def padding(order: list[int]) -> float:
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        padded = sum(max(b) * len(b) for b in batches)
        return 1 - sum(order) / padded if padded else 0.0

    shuffled = list(lengths)
    random.Random(seed).shuffle(shuffled)
    return {
        "examples": len(lengths),
        "tokens": sum(lengths),
        **pct,
        "max": s[-1] if s else 0,
        "padding_share_random": padding(shuffled),
        "padding_share_grouped": padding(s),
    }
