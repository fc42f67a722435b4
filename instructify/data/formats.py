"""Each row format (messages, ShareGPT, Alpaca, prompt/completion, two-speaker logs, and the tool-calling shapes of
xLAM and glaive) converted to `messages` and the row's `tools` (instructify/data/tool_formats.py)."""

from __future__ import annotations

import logging

from instructify.data import tool_formats
from instructify.data.records import DataError, Messages
from instructify.data.sources import _Unreadable

log = logging.getLogger(__name__)


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


def detect(row: dict, columns: dict) -> str | None:
    """The format of a row, from its keys (after renames)."""
    col = lambda name: columns.get(name, name)  # noqa: E731
    if col("query") in row and col("answers") in row:
        return "xlam"
    if col("chat") in row and col("system") in row:
        return "glaive"
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


Converted = tuple[Messages, list[dict]]  # messages and the row's tools ([] for rows without)


def _from_messages(row: dict, col) -> Converted:
    msgs = row.get(col("messages"))
    if not isinstance(msgs, list):
        raise DataError(f"lacks a `{col('messages')}` list")
    role, content = col("role"), col("content")
    out = [
        tool_formats.tool_message({**m, "role": m.get(role), "content": m.get(content)})
        if isinstance(m, dict)
        else {"role": None, "content": m}
        for m in msgs
    ]
    return out, tool_formats.row_tools(row, col("tools"))


def _from_sharegpt(row: dict, col) -> Converted:
    turns = row.get(col("conversations"))
    if not isinstance(turns, list):
        raise DataError(f"lacks a `{col('conversations')}` list")
    speaker, text = col("from"), col("value")
    out = []
    for t in turns:
        raw = t.get(speaker) if isinstance(t, dict) else None
        out.append(
            tool_formats.sharegpt_turn(str(raw), t.get(text), SHAREGPT_ROLES)
            if raw
            else {"role": raw, "content": t}
        )
    return out, tool_formats.row_tools(row, col("tools"))


def _from_alpaca(row: dict, col) -> Converted:
    instruction, extra = row.get(col("instruction")), row.get(col("input"))
    if not isinstance(instruction, str):
        raise DataError(f"`{col('instruction')}` is not a string")
    prompt = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": row.get(col("output"))}]
    system = row.get(col("system"))
    return (
        [{"role": "system", "content": system}, *msgs] if isinstance(system, str) and system.strip() else msgs
    ), []


def _from_prompt_completion(row: dict, col) -> Converted:
    return _text_turns(row.get(col("prompt")), "user") + _text_turns(
        row.get(col("completion")), "assistant"
    ), []


def _from_two_speaker(row: dict, col) -> Converted:
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
    ], []


# Each format's converter; config's `data.sources[].format` choices are these names and `auto` (a test holds them
# equal).
CONVERTERS = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "prompt_completion": _from_prompt_completion,
    "two_speaker": _from_two_speaker,
    "xlam": tool_formats.from_xlam,
    "glaive": tool_formats.from_glaive,
}


def to_messages(row: object, fmt: str, columns: dict) -> Messages:
    """The messages of one raw row (to_conversation without its tools)."""
    return to_conversation(row, fmt, columns)[0]


def to_conversation(row: object, fmt: str, columns: dict) -> Converted:
    """Convert one raw row to (messages, tools); raises DataError with the reason for rows this format cannot
    read."""
    if isinstance(row, _Unreadable):
        raise DataError(row.reason)
    if not isinstance(row, dict):
        raise DataError(f"expected an object, got {type(row).__name__}")
    if fmt == "auto":
        fmt = detect(row, columns)
        if fmt is None:
            raise DataError(
                f"cannot tell the format from keys {sorted(row)}; expected messages, conversations, "
                "instruction/output, prompt/completion, turns, query/answers (xLAM) or system/chat (glaive); set data.sources[].format or .columns"
            )
    if fmt not in CONVERTERS:
        raise DataError(f"unknown format {fmt!r}")
    return CONVERTERS[fmt](row, lambda name: columns.get(name, name))
