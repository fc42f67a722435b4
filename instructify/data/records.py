"""What the data stages pass along: a conversation, a rejected row and its reason, the load report, the error."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


Messages = list[dict[str, str]]


class DataError(ValueError):
    """Data that cannot be used; the message names the source and row and what to do."""


@dataclass
class Conversation:
    id: str  # stable across runs: source + row key; the seeded split hashes it
    messages: Messages
    where: str = ""  # file:row, for messages that point at the input
    tools: bool = False  # offered tools or made calls (flattened): the tool check's, not the chat eval's
    max_length: int | None = None  # its source's data.sources[].max_length, when it has one


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
