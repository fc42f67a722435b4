"""Tool calling in ChatML, Hermes / Qwen2.5 style: what every engine already parses.

With tools, the system turn gains a `# Tools` block with one JSON schema per line inside `<tools></tools>`; an
assistant call is `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` (one block per call), then
`<|im_end|>`; tool results come back in a user turn as `<tool_response>...</tool_response>`, consecutive results
grouped. vLLM's `hermes` parser, llama.cpp's Hermes handler (chosen when the template holds `<tool_call>`), Ollama
and BFCL's Qwen handler read this format. The tags are plain text, never special tokens: engines drop special
tokens before parsing (PITFALLS 24).

`flatten` turns a conversation with tools, `tool_calls` and `tool` messages into plain ChatML messages whose
rendering is, character for character, what the Jinja template renders (a test holds the two equal): the data stage
and the encoder then need no notion of tools, and the assistant mask covers each call and its `<|im_end|>`, never
the tools block or a tool's result. Our own code because transformers has templates but no parser or validator of
calls, and TRL none for this format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call>"
)
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
TAGS = (CALL_OPEN, CALL_CLOSE, RESPONSE_OPEN, RESPONSE_CLOSE)


# Probe for `doctor`'s tool check: a call (dict arguments), its result, an answer from it.
PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
PROBE = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 14}'},
    {"role": "assistant", "content": "14 C in Paris."},
]


def dumps(value: object) -> str:
    """JSON as the template's `tojson` writes it (transformers: json.dumps, ensure_ascii off, default separators)."""
    return json.dumps(value, ensure_ascii=False)


def tool_schema(tool: object) -> dict:
    """A tool as OpenAI sends it ({"type": "function", "function": {...}}): a Python function goes through
    transformers' get_json_schema (type hints and docstring), a bare function schema is wrapped."""
    if callable(tool):
        from transformers.utils import get_json_schema

        return get_json_schema(tool)
    if isinstance(tool, dict) and "function" not in tool and "name" in tool:
        return {"type": "function", "function": tool}
    return tool  # type: ignore[return-value]


def tool_schemas(tools: list | None) -> list[dict]:
    return [tool_schema(t) for t in tools or []]


def function_of(tool: dict) -> dict:
    return tool.get("function", tool) if isinstance(tool, dict) else {}


def tools_text(tools: list[dict]) -> str:
    return TOOLS_HEAD + "".join("\n" + dumps(t) for t in tools) + TOOLS_TAIL


def call_parts(call: dict) -> tuple[str, object]:
    """(name, arguments) of a call in OpenAI's shape ({"function": {...}}) or bare ({"name", "arguments"})."""
    fn = call.get("function", call) if isinstance(call, dict) else {}
    return fn.get("name"), fn.get("arguments")


def call_text(call: dict) -> str:
    """One call block. Arguments as a dict are written as JSON, as OpenAI's JSON string verbatim: never encoded
    twice (PITFALLS 25)."""
    name, arguments = call_parts(call)
    args = arguments if isinstance(arguments, str) else dumps(arguments)
    return f'{CALL_OPEN}\n{{"name": "{name}", "arguments": {args}}}\n{CALL_CLOSE}'


def reply_text(message: dict) -> str:
    """An assistant message's text between `<|im_start|>assistant\\n` and `<|im_end|>`: its content, then its calls."""
    content = message.get("content") or ""
    return "\n".join(([content] if content else []) + [call_text(c) for c in message.get("tool_calls") or []])


def closing_ids(tokenizer) -> list[int]:
    """The ids `</tool_call>` has inside a trained call, as encode() tokenises it: SentencePiece tokenisers give
    the tag alone another first piece (a word-start marker), so it is cut from a tokenised call."""
    call = f"assistant\n{call_text({'name': 'f', 'arguments': {}})}"
    whole = tokenizer(call, add_special_tokens=False).input_ids
    before = tokenizer(call[: -len(CALL_CLOSE)], add_special_tokens=False).input_ids
    same = next((i for i, (a, b) in enumerate(zip(whole, before)) if a != b), min(len(whole), len(before)))
    return whole[same:]


def _content(message: dict) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else dumps(content)


def flatten(messages: list[dict], tools: list | None = None, system_prompt: str | None = None) -> list[dict]:
    """Plain ChatML messages (role, content) that render exactly as the template renders `messages` with `tools`:
    the tools block in the system turn (after the conversation's system message, or `system_prompt`, the one the
    template injects), calls written into the assistant's text, consecutive tool results one user turn."""
    schemas = tool_schemas(tools)
    out: list[dict] = []
    rest = messages
    if schemas:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else system_prompt
        rest = messages[1:] if messages and messages[0]["role"] == "system" else messages
        out.append({"role": "system", "content": (f"{system}\n\n" if system else "") + tools_text(schemas)})
    for m in rest:
        if m["role"] == "tool":
            block = f"{RESPONSE_OPEN}\n{_content(m)}\n{RESPONSE_CLOSE}"
            if out and out[-1].get("tool_results"):
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + block}
            else:
                out.append({"role": "user", "content": block, "tool_results": True})
        elif m["role"] == "assistant":
            out.append({"role": "assistant", "content": reply_text(m)})
        else:
            out.append({"role": m["role"], "content": _content(m)})
    return [{"role": m["role"], "content": m["content"]} for m in out]


def uses_tools(messages: object, tools: object = None) -> bool:
    """Whether a conversation needs `flatten`: tools offered, a call made or a tool result given."""
    if tools:
        return True
    return isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("tool_calls") or m.get("role") == "tool") for m in messages
    )


# ---- reading a reply back: what an engine's Hermes parser does ----

_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.S)


@dataclass
class Reply:
    content: str  # the text outside the call blocks, stripped
    calls: list[dict] = field(default_factory=list)  # {"name": str, "arguments": dict}, in order
    problems: list[str] = field(default_factory=list)  # why a block is not a call; unclosed or stray tags


def parse_reply(text: str) -> Reply:
    """Calls and text of a generated reply (up to, not including, `<|im_end|>`), as vLLM's hermes parser reads
    them: each `<tool_call>` block must hold a JSON object with a string `name` and object `arguments`."""
    calls, problems = [], []
    for block in _BLOCK.findall(text):
        try:
            value = json.loads(block)
        except json.JSONDecodeError:
            problems.append("a <tool_call> block is not JSON")
            continue
        arguments = value.get("arguments", value.get("parameters")) if isinstance(value, dict) else None
        if isinstance(arguments, str):  # some models write OpenAI's string form; engines accept it
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            problems.append("a <tool_call> block has no name")
        elif not isinstance(arguments, dict):
            problems.append(f"the call to {value['name']} has no arguments object")
        else:
            calls.append({"name": value["name"], "arguments": arguments})
    rest = _BLOCK.sub("", text)
    if CALL_OPEN in rest or CALL_CLOSE in rest:
        problems.append("an unclosed <tool_call> tag")
    if RESPONSE_OPEN in text:
        problems.append("the reply writes a <tool_response> itself")
    return Reply(rest.strip(), calls, problems)


def ends_after_calls(text: str) -> bool:
    """A reply with calls ends right after its last `</tool_call>` (nothing but whitespace after it)."""
    return CALL_CLOSE not in text or not text.rsplit(CALL_CLOSE, 1)[1].strip()


# ---- arguments against a function's schema: the subset get_json_schema and OpenAI tools use ----

_TYPES: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def schema_problem(value: object, schema: dict, where: str = "arguments") -> str | None:
    """Why `value` breaks `schema` (missing required, unknown key, wrong type, not in enum), or None. A compact
    checker of the subset tools use, so each failure is a short reason the load report can count (jsonschema is
    not a dependency here, and its messages quote whole values)."""
    if not isinstance(schema, dict) or (value is None and schema.get("nullable")):
        return None
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds or []
    if kinds and not any(_TYPES.get(k, lambda v: True)(value) for k in kinds):
        return f"wrong type: {where} should be {' or '.join(kinds)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"value outside the enum: {where} is {value!r}, not one of {schema['enum']}"
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):
        props = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                return f"missing required: {where} lacks {key!r}"
        for key, v in value.items():
            if key not in props:
                if schema.get("additionalProperties") is False or "properties" in schema:
                    return f"unknown argument: {where} has {key!r}, which the schema does not list"
                continue
            if found := schema_problem(v, props[key], key):
                return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            if found := schema_problem(item, schema["items"], f"{where}[{i}]"):
                return found
    return None


def call_problem(name: object, arguments: object, tools: list[dict], schema: bool = True) -> str | None:
    """Why a call cannot be made against `tools`: an unknown function, arguments that are not JSON (OpenAI's
    string form is parsed) or (with `schema`) break the function's schema; None when it is a valid call."""
    functions = {function_of(t).get("name"): function_of(t) for t in tools}
    if name not in functions:
        return f"calls a function not in tools; {name!r} is not one of {sorted(map(str, functions))}"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return f"arguments are not JSON; the call to {name}"
    if not isinstance(arguments, dict):
        return f"arguments are not a JSON object; the call to {name}"
    found = schema_problem(arguments, functions[name].get("parameters") or {}) if schema else None
    return f"arguments break the schema, {found.split(':')[0]}; {name}: {found}" if found else None
