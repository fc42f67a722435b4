"""The rules every conversation meets before training or serving: roles, order, content, special-token text."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from instructify.data.records import Messages

log = logging.getLogger(__name__)


ROLES = ("system", "user", "assistant")


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
    """The one set of rules for a conversation, for training data and for the chat API (instructify/serving/request.py): roles from
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
