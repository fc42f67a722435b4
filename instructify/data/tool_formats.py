"""Tool-calling rows in the public shapes, converted to OpenAI's: `messages` with `tool_calls` and `tool` messages,
plus the row's `tools` (JSON schemas).

- messages: OpenAI's own shape, `tools` beside `messages` (a list, or a JSON string as many Hub sets store it);
- sharegpt: Hermes / glaive-toolcall: `from: function_call` (a JSON call or list of calls), `from: observation` or
  `from: tool` (a result, `<tool_response>` tags optional), `gpt` turns holding `<tool_call>` blocks; `tools` beside;
- xlam: Salesforce xLAM's `query` / `tools` / `answers` (parameters as {name: {type: "str, optional", ...}});
- glaive: glaive-function-calling-v2's text form, `system` ("... functions ... -" then JSON schemas) and `chat`
  (`USER:` / `ASSISTANT: <functioncall> ...` / `FUNCTION RESPONSE:` turns, `<|endoftext|>` ends).

Our own code because no library converts these shapes; each reads the public sets as they are published.
"""

from __future__ import annotations

import json
import re

from instructify.chat import tools as chat_tools
from instructify.data.records import DataError, Messages


def _json(value: object, what: str) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise DataError(f"`{what}` is not JSON ({e.msg} at character {e.pos})") from None


def row_tools(row: dict, key: str = "tools") -> list[dict]:
    """The row's tools in OpenAI's shape ([] when it has none)."""
    value = _json(row.get(key), key) if row.get(key) not in (None, "") else []
    if not isinstance(value, list):
        raise DataError(f"`{key}` must be a list of function schemas")
    return chat_tools.tool_schemas(value)


def _call(value: object, i: int) -> dict:
    """A call in OpenAI's shape from {"name", "arguments"} or OpenAI's own, arguments kept as given."""
    name, arguments = chat_tools.call_parts(value) if isinstance(value, dict) else (None, None)
    if not isinstance(name, str):
        raise DataError(f"a tool call lacks a name: {str(value)[:80]}")
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments or {}}}


def calls_of(values: list) -> list[dict]:
    return [_call(v, i) for i, v in enumerate(values)]


def tool_message(message: dict) -> dict:
    """Keep what a tool conversation needs of a message: role, content, the calls, and a result's call id and
    function name (a user's `name` is dropped, as before)."""
    out = {"role": message.get("role"), "content": message.get("content")}
    for key in ("tool_calls", "tool_call_id") + (("name",) if out["role"] == "tool" else ()):
        if message.get(key) is not None:
            out[key] = message[key]
    return out


_RESPONSE = re.compile(r"^\s*<tool_response>\s*(.*?)\s*</tool_response>\s*$", re.S)


def _strip_response(text: object) -> object:
    found = _RESPONSE.match(text) if isinstance(text, str) else None
    return found.group(1) if found else text


def sharegpt_turn(speaker: str, value: object, roles: dict) -> dict:
    """One ShareGPT turn, tool speakers and `<tool_call>` text included."""
    speaker = speaker.lower()
    if speaker == "function_call":
        calls = _json(value, "function_call")
        return {
            "role": "assistant",
            "content": "",
            "tool_calls": calls_of(calls if isinstance(calls, list) else [calls]),
        }
    if speaker in ("observation", "tool", "function", "function_response", "ipython"):
        return {"role": "tool", "content": _strip_response(value)}
    role = roles.get(speaker, speaker)
    if role == "assistant" and isinstance(value, str) and chat_tools.CALL_OPEN in value:
        reply = chat_tools.parse_reply(value)
        if reply.problems:
            raise DataError(f"an assistant turn's tool call cannot be read: {reply.problems[0]}")
        return {"role": "assistant", "content": reply.content, "tool_calls": calls_of(reply.calls)}
    return {"role": role, "content": value}


def from_xlam(row: dict, col) -> tuple[Messages, list[dict]]:
    query, answers = row.get(col("query")), _json(row.get(col("answers")), col("answers"))
    if not isinstance(query, str):
        raise DataError(f"`{col('query')}` is not a string")
    tools = [_xlam_tool(t) for t in _json(row.get(col("tools")), col("tools")) or []]
    if not isinstance(answers, list) or not answers:
        raise DataError(f"`{col('answers')}` holds no call; xLAM rows without one have no reply to train on")
    return [
        {"role": "user", "content": query},
        {"role": "assistant", "content": "", "tool_calls": calls_of(answers)},
    ], tools


_XLAM_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array",
               "dict": "object", "any": None}  # fmt: skip


def _xlam_type(text: str) -> dict:
    base = text.split(",")[0].strip().lower()
    inner = re.match(r"(list|List)\[(\w+)", base)
    kind = _XLAM_TYPES.get(inner.group(1).lower() if inner else base.split("[")[0], "string")
    schema = {"type": kind} if kind else {}
    if inner and _XLAM_TYPES.get(inner.group(2).lower()):
        schema["items"] = {"type": _XLAM_TYPES[inner.group(2).lower()]}
    return schema


def _xlam_tool(tool: object) -> dict:
    """xLAM's {name, description, parameters: {p: {type: "str, optional", description, default}}} as a JSON schema."""
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise DataError(f"an xLAM tool lacks a name: {str(tool)[:80]}")
    props, required = {}, []
    for name, spec in (tool.get("parameters") or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        kind = str(spec.get("type", "str"))
        props[name] = _xlam_type(kind) | (
            {"description": spec["description"]} if spec.get("description") else {}
        )
        if "optional" not in kind and "default" not in spec:
            required.append(name)
    parameters = {"type": "object", "properties": props, "required": required}
    return {"type": "function", "function": {"name": tool["name"], "description": tool.get("description", ""),
                                             "parameters": parameters}}  # fmt: skip


_GLAIVE_TURN = re.compile(r"(USER|ASSISTANT|FUNCTION RESPONSE):\s*")


def from_glaive(row: dict, col) -> tuple[Messages, list[dict]]:
    system, chat = row.get(col("system")), row.get(col("chat"))
    if not isinstance(system, str) or not isinstance(chat, str):
        raise DataError(f"glaive rows need `{col('system')}` and `{col('chat')}` strings")
    text, tools = _glaive_system(system)
    messages: Messages = [{"role": "system", "content": text}] if text else []
    parts = _GLAIVE_TURN.split(chat)
    for speaker, body in zip(parts[1::2], parts[2::2]):
        body = body.replace("<|endoftext|>", "").strip()
        if speaker == "USER":
            messages.append({"role": "user", "content": body})
        elif speaker == "FUNCTION RESPONSE":
            messages.append({"role": "tool", "content": body})
        elif "<functioncall>" in body:
            before, call = body.split("<functioncall>", 1)
            # glaive quotes the arguments object in single quotes: '{"a": 1}' -> {"a": 1}
            call = re.sub(r"'(\{.*\})'", r"\1", call.strip(), flags=re.S)
            messages.append({"role": "assistant", "content": before.strip(),
                             "tool_calls": calls_of([_json(call, "<functioncall>")])})  # fmt: skip
        else:
            messages.append({"role": "assistant", "content": body})
    return messages, tools


def _glaive_system(system: str) -> tuple[str, list[dict]]:
    """The system text before the schemas, and the function schemas glaive lists after it."""
    text = system.removeprefix("SYSTEM:").strip()
    start = text.find("{")
    if start < 0:
        return text, []
    intro, rest, schemas = text[:start].strip().rstrip("-").strip(), text[start:], []
    decoder = json.JSONDecoder()
    while rest.strip().startswith("{"):
        rest = rest.strip()
        try:
            value, end = decoder.raw_decode(rest)
        except json.JSONDecodeError as e:
            raise DataError(f"`system`: a function schema is not JSON ({e.msg})") from None
        schemas.append(value)
        rest = rest[end:]
    return intro, chat_tools.tool_schemas(schemas)
