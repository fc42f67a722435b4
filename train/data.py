"""Conversations in, validated `messages` rows out, split into train and held-out eval.

Sources (local files, folders, globs, Hub ids, the chitchat package) are read into raw rows, each row is converted
from its format (messages, ShareGPT, Alpaca, prompt/completion, two-speaker logs) to `messages`, then validated.
Every rejected row is counted by reason and kept with its reason for `rejected.jsonl`; nothing is dropped silently.
Tokenisation lives in train/template.py.
"""

from __future__ import annotations

import csv
import functools
import glob
import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from train.config import DataConfig, SourceConfig

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")
Messages = list[dict[str, str]]

# ShareGPT speaker names seen in the wild -> our roles
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "prompter": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant", "bot": "assistant",
    "system": "system",
}  # fmt: skip

# Consecutive chat messages of one sender are joined with a space, as the chitchat package itself does: with
# newlines, replies become lists of lines and a small model learns to keep adding lines instead of stopping.
TWO_SPEAKER_JOIN = " "


class DataError(ValueError):
    """Data that cannot be used; the message names the source and row and what to do."""


@dataclass
class Conversation:
    id: str  # stable across runs: source + row key; the seeded split hashes it
    messages: Messages
    where: str = ""  # file:row, for messages that point at the input


@dataclass
class Rejected:
    where: str
    reason: str
    row: object


@dataclass
class LoadReport:
    read: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    rejected_rows: list[Rejected] = field(default_factory=list)
    merged: int = 0  # conversations where consecutive same-role messages were merged
    too_long: int = 0
    truncated: int = 0

    def reject(self, where: str, reason: str, row: object) -> None:
        self.rejected[_reason_key(reason)] += 1
        self.rejected_rows.append(Rejected(where, reason, row))

    def lines(self) -> list[str]:
        out = [f"read {self.read} rows, kept {self.kept} for training"]
        out += [f"rejected {n}: {reason}" for reason, n in self.rejected.most_common()]
        if self.merged:
            out.append(f"merged consecutive same-role messages in {self.merged}")
        if self.truncated:
            out.append(f"cut after the last assistant reply within max_length: {self.truncated}")
        if self.too_long:
            out.append(f"dropped, longer than max_length: {self.too_long}")
        first = {}
        for r in self.rejected_rows:  # one example row per reason, named by file and row
            first.setdefault(_reason_key(r.reason), f"e.g. {r.where}: {r.reason}")
        if first:
            out += list(first.values())[:5] + [
                "every rejected row and its reason: rejected.jsonl in the run folder"
            ]
        return out

    def write_rejected(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for r in self.rejected_rows:
                f.write(json.dumps({"where": r.where, "reason": r.reason, "row": r.row}, default=str) + "\n")


def _reason_key(reason: str) -> str:
    # "message 3 has role "bot"; expected ..." -> "has role "bot"": the report counts reasons, not positions
    reason = reason.split(" ", 2)[2] if reason.startswith("message ") else reason
    return reason.split(";")[0]


# ---- reading raw rows -------------------------------------------------------------------------------------------


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


# ---- formats -> messages ----------------------------------------------------------------------------------------


def detect(row: dict, columns: dict) -> str | None:
    """The format of a row, from its keys (after renames)."""
    col = lambda name: columns.get(name, name)  # noqa: E731
    if col("conversations") in row:
        return "sharegpt"
    for key in (col("messages"), col("turns")):
        value = row.get(key)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            first = value[0]
            if col("speaker") in first or "sender" in first:
                return "two_speaker"
            return "messages"
    if col("instruction") in row and col("output") in row:
        return "alpaca"
    if col("prompt") in row and col("completion") in row:
        return "prompt_completion"
    return None


def _text_turns(value: object, role: str) -> Messages:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def _from_messages(row: dict, col) -> Messages:
    msgs = row.get(col("messages"))
    if not isinstance(msgs, list):
        raise DataError(f"lacks a `{col('messages')}` list")
    role, content = col("role"), col("content")
    return [
        {"role": m.get(role), "content": m.get(content)}
        if isinstance(m, dict)
        else {"role": None, "content": m}
        for m in msgs
    ]


def _from_sharegpt(row: dict, col) -> Messages:
    turns = row.get(col("conversations"))
    if not isinstance(turns, list):
        raise DataError(f"lacks a `{col('conversations')}` list")
    speaker, text = col("from"), col("value")
    out = []
    for t in turns:
        raw = t.get(speaker) if isinstance(t, dict) else None
        out.append({"role": SHAREGPT_ROLES.get(str(raw).lower(), raw), "content": t.get(text) if raw else t})
    return out


def _from_alpaca(row: dict, col) -> Messages:
    instruction, extra = row.get(col("instruction")), row.get(col("input"))
    if not isinstance(instruction, str):
        raise DataError(f"`{col('instruction')}` is not a string")
    prompt = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": row.get(col("output"))}]
    system = row.get(col("system"))
    return (
        [{"role": "system", "content": system}, *msgs] if isinstance(system, str) and system.strip() else msgs
    )


def _from_prompt_completion(row: dict, col) -> Messages:
    return _text_turns(row.get(col("prompt")), "user") + _text_turns(row.get(col("completion")), "assistant")


def _from_two_speaker(row: dict, col) -> Messages:
    turns = row.get(col("turns")) or row.get(col("messages"))
    if not isinstance(turns, list):
        raise DataError(f"lacks a `{col('turns')}` list of {{speaker, text}}")
    speaker, text = col("speaker"), col("text")
    merged: list[tuple[object, list[str]]] = []
    for t in turns:
        who = t.get(speaker, t.get("sender")) if isinstance(t, dict) else None
        words = t.get(text) if isinstance(t, dict) else None
        if not isinstance(words, str):
            raise DataError(f"a turn lacks a `{text}` string")
        if merged and merged[-1][0] == who:
            merged[-1][1].append(words.strip())
        else:
            merged.append((who, [words.strip()]))
    first = merged[0][0] if merged else None  # the first speaker is the user
    return [
        {"role": "user" if who == first else "assistant", "content": TWO_SPEAKER_JOIN.join(ws)}
        for who, ws in merged
    ]


# Each format's converter; config's `data.sources[].format` choices are these names and `auto` (a test holds them
# equal).
CONVERTERS = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "prompt_completion": _from_prompt_completion,
    "two_speaker": _from_two_speaker,
}


def to_messages(row: object, fmt: str, columns: dict) -> Messages:
    """Convert one raw row; raises DataError with the reason for rows this format cannot read."""
    if isinstance(row, _Unreadable):
        raise DataError(row.reason)
    if not isinstance(row, dict):
        raise DataError(f"expected an object, got {type(row).__name__}")
    if fmt == "auto":
        fmt = detect(row, columns)
        if fmt is None:
            raise DataError(
                f"cannot tell the format from keys {sorted(row)}; expected messages, conversations, "
                "instruction/output, prompt/completion or turns; set data.sources[].format or .columns"
            )
    if fmt not in CONVERTERS:
        raise DataError(f"unknown format {fmt!r}")
    return CONVERTERS[fmt](row, lambda name: columns.get(name, name))


# ---- validation -------------------------------------------------------------------------------------------------


def merge_consecutive(messages: Messages) -> tuple[Messages, bool]:
    """Join consecutive messages of one role with a newline; (messages, whether anything was merged)."""
    out: Messages = []
    for m in messages:
        if out and out[-1]["role"] == m["role"] and m["role"] in ("user", "assistant"):
            out[-1] = {"role": m["role"], "content": f"{out[-1]['content']}\n{m['content']}"}
        else:
            out.append(dict(m))
    return out, len(out) != len(messages)


@functools.lru_cache(maxsize=8)
def _first_chars(special_texts: tuple[str, ...]) -> frozenset[str]:
    return frozenset(t[0] for t in special_texts if t)


@dataclass(frozen=True)
class Problem:
    """Why a conversation cannot be used: `reason`, about message `index` (0-based; None: the conversation) and its
    `field` (role, content; None: the message), and for training data what to do (`fix`)."""

    reason: str
    index: int | None = None
    field: str | None = None
    fix: str = ""

    def __str__(self) -> str:
        text = self.reason if self.index is None else f"message {self.index + 1} {self.reason}"
        return f"{text}; {self.fix}" if self.fix else text


def check_messages(
    messages: object, special_texts: tuple[str, ...] = (), prompt: bool = False
) -> Problem | None:
    """The one set of rules for a conversation, for training data and for the chat API (train/serve.py): roles from
    ROLES, system only first, then user and assistant alternating from user, non-empty text content, and none of
    `special_texts` (control-token strings such as `<|im_end|>`; empty to allow them, as `template.special_text:
    escape` does, where they are tokenised as plain text) inside a message. A training conversation needs an
    assistant turn; a `prompt` ends on the user's message, which the model answers."""
    if not isinstance(messages, list) or not messages:
        return Problem("messages is empty or not a list")
    first_chars = _first_chars(special_texts)
    expected = "user"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            missing = None if not isinstance(m, dict) else "role" if "role" not in m else "content"
            return Problem("lacks role/content", i, missing)
        role, content = m["role"], m["content"]
        if role not in ROLES:
            return Problem(f'has role "{role}"; expected one of {", ".join(ROLES)}', i, "role")
        if not isinstance(content, str) or not content.strip():
            return Problem("has empty or non-string content", i, "content")
        if first_chars & set(content):  # cheap pre-check: most messages hold none of these characters
            found = next((t for t in special_texts if t in content), None)
            if found:
                return Problem(
                    f"contains special-token text {found}; it would act as a control token",
                    i,
                    "content",
                    "set template.special_text: escape to train on it as plain text",
                )
        if role == "system":
            if i != 0:
                return Problem("is system; system is only allowed first", i, "role")
            continue
        if role != expected:
            return Problem(
                f"is {role} where {expected} was expected; turns alternate, starting with user", i, "role"
            )
        expected = "assistant" if role == "user" else "user"
    if prompt and messages[-1]["role"] != "user":
        return Problem("messages must end with the user's message: the model answers it")
    if not prompt and not any(m["role"] == "assistant" for m in messages):
        return Problem("no assistant turn")
    return None


def problem(messages: object, special_texts: tuple[str, ...] = ()) -> str | None:
    """Why a conversation cannot be trained on (check_messages' rules), or None. Each reason is counted in the load
    report."""
    found = check_messages(messages, special_texts)
    return None if found is None else str(found)


def load(cfg: DataConfig, special_texts: tuple[str, ...], report: LoadReport) -> list[Conversation]:
    """Every source, converted and validated, weighted into one list (rejects counted in `report`)."""
    out = []
    for n, src in enumerate(cfg.sources):
        convs = []
        for where, row in read_source(src):
            report.read += 1
            try:
                msgs = to_messages(row, src.format, src.columns)
            except DataError as e:
                report.reject(where, str(e), getattr(row, "raw", row))
                continue
            if cfg.consecutive == "merge" and all(isinstance(m, dict) and "role" in m for m in msgs):
                msgs, merged = merge_consecutive(msgs)
                report.merged += merged
            reason = problem(msgs, special_texts)
            if reason:
                report.reject(where, reason, row)
                continue
            key = row.get("id", where.rsplit(":", 1)[-1]) if isinstance(row, dict) else where
            convs.append(Conversation(f"{n}:{key}", msgs, where))
        out.extend(weighted(convs, src.weight, cfg.seed))
    return out


def weighted(convs: list[Conversation], weight: float, seed: int) -> list[Conversation]:
    """`weight` x the rows: whole copies, then a seeded sample for the fraction (alignment-handbook's mixer)."""
    whole, frac = int(weight), weight - int(weight)
    sample = random.Random(seed).sample(convs, round(frac * len(convs))) if frac else []
    keep = {id(c) for c in sample}
    return [c for _ in range(whole) for c in convs] + [c for c in convs if id(c) in keep]


def check_rejected(report: LoadReport, max_share: float, where: str) -> None:
    share = sum(report.rejected.values()) / max(report.read, 1)
    if share > max_share:
        raise DataError(
            f"{where}: {share:.0%} of {report.read} rows rejected (limit data.max_rejected={max_share:.0%}):\n  "
            + "\n  ".join(report.lines())
            + "\nsee rejected.jsonl in the run folder for each row and its reason; fix the data, map its columns "
            "(data.sources[].columns), or raise data.max_rejected"
        )


# ---- split and length ---------------------------------------------------------------------------------------


def held_out(conv_id: str, seed: int, share: float) -> bool:
    """Seeded hash of the row's id: each row's side never changes when rows are appended or removed."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{conv_id}".encode()).digest()[:8], "big")
    return h / 2**64 < share


def split(
    convs: list[Conversation], share: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    train, held, seen = [], [], set()
    for c in convs:
        if held_out(c.id, seed, share):
            if c.id not in seen:  # a weighted copy of an eval row is never trained on, nor counted twice
                held.append(c)
                seen.add(c.id)
        else:
            train.append(c)
    if not train:
        raise DataError(f"data.eval_share={share} leaves no training data ({len(convs)} conversations)")
    return train, held


def fit(roles: list[str], ends: list[int], max_length: int) -> int:
    """How many messages to keep: the longest prefix within `max_length` tokens that ends on an assistant reply
    (never inside one: a reply cut before its <|im_end|> teaches the model not to stop). 0 when none fits."""
    keep = 0
    for i, (role, end) in enumerate(zip(roles, ends)):
        if end > max_length:
            break
        if role == "assistant":
            keep = i + 1
    return keep


def fit_all(
    convs: list[Conversation], encoded: list, max_length: int, policy: str, report: LoadReport
) -> list[dict]:
    """Rows for the trainer (messages, input_ids, assistant_masks) under the over-length policy."""
    rows = []
    for conv, enc in zip(convs, encoded):
        keep = len(conv.messages)
        if enc.ends[-1] > max_length:
            if policy == "error":
                raise DataError(
                    f"{conv.where}: {enc.ends[-1]} tokens, over data.max_length={max_length}; raise max_length or "
                    "set data.overlength: drop or truncate"
                )
            keep = (
                fit([m["role"] for m in conv.messages], enc.ends, max_length) if policy == "truncate" else 0
            )
            if keep == 0:
                report.too_long += 1
                continue
            report.truncated += 1
        n = enc.ends[keep - 1]
        rows.append(
            {
                "messages": conv.messages[:keep],
                "input_ids": enc.input_ids[:n],
                "assistant_masks": enc.assistant_masks[:n],
            }
        )
    return rows


def eval_prompts(convs: list[Conversation], encoded: list, max_length: int, seed: int) -> list[dict]:
    """One prompt per held-out conversation: the turns before an assistant reply (1, 3 or 5 prior turns, in turn),
    rendered later with the generation prompt; the gold reply is kept for teacher-forced metrics. Only replies whose
    conversation so far fits `max_length` count, as in training; a conversation with none gives no prompt."""
    prompts = []
    for k, (conv, enc) in enumerate(zip(convs, encoded)):
        fits = [i for i, end in enumerate(enc.ends) if end <= max_length]  # ends may stop past max_length
        replies = [i for i in fits if conv.messages[i]["role"] == "assistant"]
        if not replies:
            continue
        want = (1, 3, 5)[(k + seed) % 3]
        idx = min(replies, key=lambda i: abs(i - want))  # the nearest to the wanted number of prior turns
        prompts.append(
            {
                "id": conv.id,
                "messages": conv.messages[:idx],
                "reference": conv.messages[idx]["content"],
                "prior_turns": idx,
            }
        )
    return prompts
