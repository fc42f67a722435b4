"""Tool calls in the API: `tool_choice` as a prompt prefix, and a reply's `<tool_call>` blocks as OpenAI's
`tool_calls`, whole or streamed (each call sent once its block closes: a chunk with its id and name, then one with
its arguments, as OpenAI's stream delivers them and its client accumulates them).

tool_choice: `auto` lets the model choose; `none` leaves the tools out of the prompt (vLLM's
--exclude-tools-when-tool-choice-none), so it answers in text; `required` and a named function start the reply
with the call's opening (`<tool_call>\\n`, or that and `{"name": "<name>", "arguments":`) so it can only call.
Our own code: the format is ours (instructify/chat/tools.py) and no library maps it to OpenAI's stream.
"""

from __future__ import annotations

import json
import uuid

from instructify.chat import tools as chat_tools


class ToolChoiceError(ValueError):
    """A tool_choice this request cannot have; the message says what to send."""


def choice_of(tool_choice: object, tools: list[dict]) -> str | None:
    """ "auto", "none", "required", or the function name a named choice forces; None when no tools are given."""
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise ToolChoiceError("tool_choice needs tools: send the functions in `tools`")
        return None
    if tool_choice is None:
        return "auto"
    if tool_choice in ("auto", "none", "required"):
        return tool_choice
    name = chat_tools.call_parts(tool_choice)[0] if isinstance(tool_choice, dict) else None
    names = [chat_tools.function_of(t).get("name") for t in tools]
    if not isinstance(name, str) or name not in names:
        raise ToolChoiceError(
            f"tool_choice names {name!r}, not one of the tools {names}: send auto, none, required or "
            '{"type": "function", "function": {"name": ...}}'
        )
    return name


def prefix_of(choice: str | None) -> tuple[str, str]:
    """The text the reply is started with, so that it is a call (required) or a call of one function (named),
    and how such a call goes on (for instructify/chat/template.py's prefill)."""
    if choice in (None, "auto", "none"):
        return "", ""
    if choice == "required":
        return chat_tools.CALL_OPEN + "\n", '{"name": "f", "arguments": {}}\n' + chat_tools.CALL_CLOSE
    # ends before the space: BPE merges it with the `{"` that follows, so the model writes both as it learnt them
    return (
        f'{chat_tools.CALL_OPEN}\n{{"name": "{choice}", "arguments":',
        ' {"a": 1}}\n' + chat_tools.CALL_CLOSE,
    )


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def openai_call(call: dict) -> dict:
    """A parsed call as OpenAI returns it: an id, and the arguments as a JSON string."""
    arguments = chat_tools.dumps(call["arguments"])
    return {"id": call_id(), "type": "function", "function": {"name": call["name"], "arguments": arguments}}


def message_of(text: str, finish_reason: str, parse: bool) -> tuple[dict, str]:
    """The assistant message for a whole reply and its finish_reason: `tool_calls` when it made calls and ended."""
    reply = chat_tools.parse_reply(text) if parse else None
    if not reply or not reply.calls or reply.problems:
        return {"role": "assistant", "content": text}, finish_reason
    message = {
        "role": "assistant",
        "content": reply.content or None,
        "tool_calls": [openai_call(c) for c in reply.calls],
    }
    return message, "tool_calls" if finish_reason == "stop" else finish_reason


class StreamSplitter:
    """Pieces of a streamed reply in, ("text", str) and ("call", openai_call) events out: text outside call blocks
    as it comes (holding back what may be the start of a `<tool_call>` tag), each call once its block closes. A
    block that is not a call is passed on as text, so nothing the model wrote is lost."""

    def __init__(self):
        self.buffer, self.in_block, self.calls = "", False, 0

    def feed(self, piece: str) -> list[tuple[str, object]]:
        self.buffer += piece
        out: list[tuple[str, object]] = []
        while True:
            tag = chat_tools.CALL_CLOSE if self.in_block else chat_tools.CALL_OPEN
            at = self.buffer.find(tag)
            if at < 0:
                if not self.in_block:
                    keep = _partial(self.buffer, tag)
                    self._text(out, self.buffer[: len(self.buffer) - keep])
                    self.buffer = self.buffer[len(self.buffer) - keep :]
                return out
            body, self.buffer = self.buffer[:at], self.buffer[at + len(tag) :]
            if self.in_block:
                self._block(out, body)
            else:
                self._text(out, body)
            self.in_block = not self.in_block

    def finish(self) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        self._text(out, (chat_tools.CALL_OPEN if self.in_block else "") + self.buffer)
        self.buffer, self.in_block = "", False
        return out

    def _text(self, out: list, text: str) -> None:
        if text and not (self.calls and not text.strip()):  # the newlines between calls are not content
            out.append(("text", text))

    def _block(self, out: list, body: str) -> None:
        reply = chat_tools.parse_reply(f"{chat_tools.CALL_OPEN}{body}{chat_tools.CALL_CLOSE}")
        if reply.calls and not reply.problems:
            self.calls += 1
            out.append(("call", openai_call(reply.calls[0])))
        else:
            out.append(("text", f"{chat_tools.CALL_OPEN}{body}{chat_tools.CALL_CLOSE}"))


def _partial(text: str, tag: str) -> int:
    """The length of the longest end of `text` that begins `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def call_chunks(index: int, call: dict) -> list[dict]:
    """A call as two stream deltas: id, type and name with empty arguments, then the arguments."""
    head = {
        "index": index,
        "id": call["id"],
        "type": "function",
        "function": {"name": call["function"]["name"], "arguments": ""},
    }
    body = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
    return [{"tool_calls": [head]}, {"tool_calls": [body]}]


def arguments_json(arguments: object) -> object:
    """OpenAI sends a past call's arguments as a JSON string: parsed here, so the prompt renders as in training."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments
