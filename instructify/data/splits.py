"""The seeded held-out split, conversations cut to max_length at a turn boundary, and the held-out prompts."""

from __future__ import annotations

import hashlib
import logging

from instructify.data.records import Conversation, DataError, LoadReport

log = logging.getLogger(__name__)


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


def limit_of(conv: Conversation, max_length: int) -> int:
    """The conversation's token limit: its source's own max_length, never above data.max_length."""
    return min(conv.max_length or max_length, max_length)


def fit_all(
    convs: list[Conversation], encoded: list, max_length: int, policy: str, report: LoadReport
) -> list[dict]:
    """Rows for the trainer (messages, input_ids, assistant_masks) under the over-length policy."""
    rows = []
    for conv, enc in zip(convs, encoded):
        keep, limit = len(conv.messages), limit_of(conv, max_length)
        if enc.ends[-1] > limit:
            if policy == "error":
                raise DataError(
                    f"{conv.where}: {enc.ends[-1]} tokens, over max_length={limit}; raise data.max_length (or its "
                    "source's max_length) or set data.overlength: drop or truncate"
                )
            keep = fit([m["role"] for m in conv.messages], enc.ends, limit) if policy == "truncate" else 0
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
    conversation so far fits `max_length` count, as in training; a conversation with none gives no prompt. Tool
    conversations give none either: the tool check (eval.tools) measures calls, on functions held out of training,
    with its own token budget, and the chat bars stay about chat."""
    prompts, with_tools = [], 0
    for k, (conv, enc) in enumerate(zip(convs, encoded)):
        if conv.tools:
            with_tools += 1
            continue
        limit = limit_of(conv, max_length)
        fits = [i for i, end in enumerate(enc.ends) if end <= limit]  # ends may stop past max_length
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
    if with_tools:
        log.info("held-out prompts: %d tool conversations left to the tool check (eval.tools)", with_tools)
    return prompts
