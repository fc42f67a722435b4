"""Conversations in, validated `messages` rows out, split into train and held-out eval. No tokenisation here,
except counting tokens to cut long conversations at a turn boundary.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from train.config import DataConfig

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
Messages = list[dict[str, str]]


class DataError(ValueError):
    """Data that cannot be used; the message names the source and row."""


@dataclass
class Conversation:
    id: str  # stable across runs: the source row's key, used for the seeded split
    messages: Messages
    where: str = ""  # file:row, for messages that point at the input


@dataclass
class LoadReport:
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    too_long: int = 0
    truncated: int = 0

    def lines(self) -> list[str]:
        out = [f"kept {self.kept} conversations"]
        out += [f"rejected {n}: {reason}" for reason, n in self.rejected.most_common()]
        if self.truncated:
            out.append(f"cut at a turn boundary to fit max_length: {self.truncated}")
        if self.too_long:
            out.append(f"dropped, first exchange longer than max_length: {self.too_long}")
        return out


# ---- sources ---------------------------------------------------------------------------------------------------


# Consecutive chat messages of one sender are joined with a space, as the chitchat package itself does: with
# newlines, replies become lists of lines and a small model learns to keep adding lines instead of stopping.
JOIN = " "


def _two_speaker(conv_id: str, turns: Iterable[tuple[str, str]], where: str) -> Conversation:
    """Two-person log -> messages: consecutive messages of one sender form one turn; the first sender is the user."""
    merged: list[tuple[str, list[str]]] = []
    for sender, text in turns:
        if merged and merged[-1][0] == sender:
            merged[-1][1].append(text)
        else:
            merged.append((sender, [text]))
    first = merged[0][0] if merged else None
    messages = [
        {"role": "user" if sender == first else "assistant", "content": JOIN.join(t.strip() for t in texts)}
        for sender, texts in merged
    ]
    return Conversation(conv_id, messages, where)


def _chitchat() -> list[Conversation]:
    import chitchat_dataset

    path = Path(chitchat_dataset.__file__).parent / "dataset.json"
    raw = json.loads(path.read_text())
    convs = []
    for key, conv in raw.items():
        turns = ((u["sender"], u["text"]) for group in conv["messages"] for u in group)
        convs.append(_two_speaker(key, turns, f"{path}:{key}"))
    return convs


def _from_rows(rows: Iterable[dict], where: str) -> list[Conversation]:
    convs = []
    for i, row in enumerate(rows):
        row_where = f"{where}:{i + 1}"
        if not isinstance(row, dict) or "messages" not in row:
            keys = list(row) if isinstance(row, dict) else type(row).__name__
            raise DataError(f"{row_where}: expected an object with a `messages` list, got {keys}")
        convs.append(Conversation(str(row.get("id", i)), row["messages"], row_where))
    return convs


def _local_file(path: Path) -> list[Conversation]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None
        return _from_rows(rows, str(path))
    if suffix == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of conversations")
        return _from_rows(rows, str(path))
    if suffix == ".parquet":
        import datasets

        return _from_rows(datasets.Dataset.from_parquet(str(path)), str(path))
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet")


def _hub(cfg: DataConfig) -> list[Conversation]:
    import datasets

    ds = datasets.load_dataset(cfg.source, cfg.subset, split=cfg.split, revision=cfg.revision)
    return _from_rows(ds, f"{cfg.source}[{cfg.split}]")


def load_source(cfg: DataConfig) -> list[Conversation]:
    if cfg.source == "pypi:chitchat-dataset":
        return _chitchat()
    path = Path(cfg.source).expanduser()
    if path.exists():
        return _local_file(path)
    if cfg.source.startswith("pypi:") or cfg.source.endswith((".jsonl", ".json", ".parquet")):
        raise DataError(
            f"data.source: {cfg.source} not found; use pypi:chitchat-dataset, a local file or a Hub id"
        )
    return _hub(cfg)


# ---- validation ------------------------------------------------------------------------------------------------


def problem(messages: object, special_texts: tuple[str, ...] = ()) -> str | None:
    """Why a conversation cannot be trained on, or None. Each reason is counted in the load report.

    `special_texts`: control-token strings (`<|im_end|>`...) that may not appear inside a message; empty to allow
    them (`template.special_text: escape`, where they are tokenised as plain text).
    """
    if not isinstance(messages, list) or not messages:
        return "messages is empty or not a list"
    first_chars = {t[0] for t in special_texts}
    expected = "user"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f"message {i + 1} lacks role/content"
        role, content = m["role"], m["content"]
        if role not in ROLES:
            return f'message {i + 1} has role "{role}"; expected one of {", ".join(ROLES)}'
        if not isinstance(content, str) or not content.strip():
            return f"message {i + 1} has empty or non-string content"
        if first_chars & set(content):  # cheap pre-check: most messages hold none of these characters
            found = next((t for t in special_texts if t in content), None)
            if found:
                return (
                    f"message {i + 1} contains special-token text {found}; "
                    "set template.special_text: escape to train on it as plain text"
                )
        if role == "system":
            if i != 0:
                return f"message {i + 1}: system only allowed first"
            continue
        if role != expected:
            return f"message {i + 1} is {role} where {expected} was expected; turns alternate, starting with user"
        expected = "assistant" if role == "user" else "user"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn"
    return None


def _reason_key(reason: str) -> str:
    # "message 3 has role "bot"; ..." -> "has role "bot"" so the report counts reasons, not positions
    reason = reason.split(" ", 2)[2] if reason.startswith("message ") else reason
    return reason.split(";")[0]


def validate(
    convs: list[Conversation], report: LoadReport, special_texts: tuple[str, ...] = ()
) -> list[Conversation]:
    kept = []
    for conv in convs:
        reason = problem(conv.messages, special_texts)
        if reason is None:
            kept.append(
                Conversation(
                    conv.id, [{"role": m["role"], "content": m["content"]} for m in conv.messages], conv.where
                )
            )
        else:
            report.rejected[_reason_key(reason)] += 1
            log.debug("%s: %s", conv.where, reason)
    return kept


# ---- split and length ------------------------------------------------------------------------------------------


def _rank(conv_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{conv_id}".encode()).hexdigest()


def split(
    convs: list[Conversation], eval_size: int, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Held-out = the `eval_size` conversations with the smallest seeded hash of their id: fixed for a seed."""
    if eval_size >= len(convs):
        raise DataError(f"data.eval_size={eval_size} leaves no training data ({len(convs)} conversations)")
    held = set(sorted((c.id for c in convs), key=lambda i: _rank(i, seed))[:eval_size])
    return [c for c in convs if c.id not in held], [c for c in convs if c.id in held]


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


def fit_all(convs: list[Conversation], encoded: list, max_length: int, report: LoadReport) -> list[dict]:
    """Rows for the trainer: messages, input_ids, assistant_masks, cut at a turn boundary to fit `max_length`."""
    rows = []
    for conv, enc in zip(convs, encoded):
        keep = fit([m["role"] for m in conv.messages], enc.ends, max_length)
        if keep == 0:
            report.too_long += 1
            continue
        report.truncated += keep < len(conv.messages)
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
    rendered later with the generation prompt; the gold reply is kept for teacher-forced metrics."""
    prompts = []
    for k, (conv, enc) in enumerate(zip(convs, encoded)):
        replies = [i for i, m in enumerate(conv.messages) if m["role"] == "assistant"]
        want = (1, 3, 5)[(k + seed) % 3]
        # the reply whose prompt has the wanted number of prior turns, or the nearest one available
        idx = min(replies, key=lambda i: abs(i - want))
        if enc.ends[idx] > max_length:
            idx = replies[0]
        prompts.append(
            {
                "id": conv.id,
                "messages": conv.messages[:idx],
                "reference": conv.messages[idx]["content"],
                "prior_turns": idx,
            }
        )
    return prompts
