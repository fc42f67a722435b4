"""The rules every conversation meets before training or serving: roles, order, content, special-token text."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass

from instructify.chat import tools as chat_tools
from instructify.data.records import Messages

log = logging.getLogger(__name__)


ROLES = ("system", "user", "assistant")


def merge_consecutive(messages: Messages) -> tuple[Messages, bool]:
    """Join consecutive messages of one role with a newline; (messages, whether anything was merged)."""
    out: Messages = []
    for m in messages:
        calls = m.get("tool_calls") or (out and out[-1].get("tool_calls"))  # a call is never merged into text
        if out and out[-1]["role"] == m["role"] and m["role"] in ("user", "assistant") and not calls:
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


def check_tool_use(messages: object, tools: list, schema: bool = True) -> Problem | None:
    """The rules of tool use, before a conversation is flattened to ChatML (instructify/chat/tools.py) and checked by
    check_messages: each tool a function schema; each call names a function in `tools`, with arguments that are
    JSON and meet its schema (required present, types right, values in their enum, no unknown argument); each tool
    result answers a call made just before it. `schema=False` (a request's past calls, which the model wrote)
    skips the schema."""
    for i, tool in enumerate(tools):
        fn = chat_tools.function_of(tool)
        if not isinstance(fn.get("name"), str) or not isinstance(fn.get("parameters", {}), dict):
            return Problem(f"tools[{i}] is not a function schema; expected {{type: function, function: {{name, "
                           "parameters}}}")  # fmt: skip
    if not isinstance(messages, list):
        return None  # check_messages names it
    pending: list[object] | None = None  # call ids the next tool results may answer; None: no call before
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return None
        calls = m.get("tool_calls")
        if calls is not None and m.get("role") != "assistant":
            return Problem("has tool_calls but is not the assistant's", i, "tool_calls")
        if m.get("role") == "tool":
            if not pending:
                return Problem("is a tool result with no call before it", i, "role")
            if m.get("tool_call_id") is not None and m["tool_call_id"] not in pending:
                return Problem(f"answers call {m['tool_call_id']!r}, which the calls before it do not have", i,
                               "tool_call_id")  # fmt: skip
            pending.remove(m["tool_call_id"] if m.get("tool_call_id") is not None else pending[0])
            if not isinstance(m.get("content"), str) or not m["content"].strip():
                return Problem("is a tool result with empty or non-string content", i, "content")
            continue
        pending = None
        if calls is None:
            continue
        if not isinstance(calls, list) or not calls:
            return Problem("has tool_calls that are not a non-empty list", i, "tool_calls")
        for c in calls:
            name, arguments = chat_tools.call_parts(c)
            if found := chat_tools.call_problem(name, arguments, tools, schema):
                return Problem(found, i, "tool_calls")
        pending = [c.get("id", k) if isinstance(c, dict) else k for k, c in enumerate(calls)]
    return None


def normal_calls(messages: Messages) -> Messages:
    """Calls whose arguments came as OpenAI's JSON string, parsed to objects: training text is then written one
    way (the template's tojson), whatever the source's spacing."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                name, arguments = chat_tools.call_parts(c)
                if isinstance(arguments, str):
                    arguments = json.loads(arguments)
                calls.append({**c, "function": {"name": name, "arguments": arguments}})
            m = {**m, "tool_calls": calls, "content": m.get("content") or ""}
        out.append(m)
    return out
