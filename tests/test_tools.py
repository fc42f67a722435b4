"""Tool calling in the template and the data stage: our flattened ChatML renders as the Jinja template renders with
`tools`, ids and mask equal transformers' on every family, calls and their <|im_end|> are trained and nothing
else, OpenAI's JSON-string arguments are not encoded twice, and bad tool rows are rejected with counted reasons."""

from __future__ import annotations

import json

import families
import pytest
from transformers import AutoTokenizer

from instructify import cli
from instructify.chat import template, tools
from instructify.config import DataConfig, SourceConfig
from instructify.data import formats, mixture, records


def get_weather(city: str, unit: str = "celsius"):
    """Current weather in a city.

    Args:
        city: The city's name.
        unit: celsius or fahrenheit.
    """


ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "mode": {"enum": ["x", "y"]}},
            "required": ["a", "b"],
        },
    },
}
TOOLS = [get_weather, ADD]
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
CALL_STR = {"id": "c2", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
USER = {"role": "user", "content": "Weather in Paris, and 2+3?"}
CONVERSATIONS = {
    "single call": [USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}],
    "parallel, string arguments": [
        USER,
        {"role": "assistant", "content": "", "tool_calls": [CALL, CALL_STR]},
    ],
    "text before the call": [USER, {"role": "assistant", "content": "Checking.", "tool_calls": [CALL]}],
    "two steps, grouped results": [
        {"role": "system", "content": "Be brief."},
        USER,
        {"role": "assistant", "tool_calls": [CALL, CALL_STR]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "c2", "content": "5"},
        {"role": "assistant", "content": "21 degrees; 5."},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "Any time."},
    ],
    "tools offered, text answer": [
        {"role": "system", "content": "Be brief."},
        USER,
        {"role": "assistant", "content": "Hi."},
    ],
}
FAMILIES = ["gemma3", "llama3", "mistral", "qwen2", "phi3", "smollm2"]


@pytest.fixture(scope="module")
def chat_tokenizers(tmp_path_factory):
    made = {}
    for name in FAMILIES:
        tok = AutoTokenizer.from_pretrained(families.build(name, tmp_path_factory.mktemp(f"tools-{name}")))
        made[name] = tok, template.add_chat_tokens(None, tok)
    return made


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", sorted(CONVERSATIONS))
def test_flattened_tool_conversation_equals_the_template_and_its_mask(chat_tokenizers, family, shape):
    tok, tokens = chat_tokenizers[family]
    conv = CONVERSATIONS[shape]
    text = tok.apply_chat_template(conv, tools=TOOLS, tokenize=False)
    assert tok.apply_chat_template(tools.flatten(conv, TOOLS), tokenize=False) == text
    ref = tok.apply_chat_template(conv, tools=TOOLS, return_dict=True, return_assistant_tokens_mask=True)
    ours = template.encode(tok, [tools.flatten(conv, TOOLS)], tokens)[0]
    assert ours.input_ids == ref["input_ids"] and ours.assistant_masks == ref["assistant_masks"]
    # trained: each reply's text and calls with its <|im_end|>; never the tools block or a tool's result
    trained = tok.decode([i for i, m in zip(ours.input_ids, ours.assistant_masks) if m])
    replies = [tools.reply_text(m) + "<|im_end|>" for m in conv if m["role"] == "assistant"]
    assert trained == "".join(replies)
    assert "<tools>" not in trained and "<tool_response>" not in trained


def test_tools_block_default_system_and_no_double_encoding(chat_tokenizers):
    tok, _ = chat_tokenizers["gemma3"]
    conv = CONVERSATIONS["parallel, string arguments"]
    text = tok.apply_chat_template(conv, tools=TOOLS, tokenize=False)
    assert text.count('{"name": "get_weather"') == 2  # once in <tools>, once as the call
    assert (
        '"arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>' in text
    )  # the string verbatim, not "{\"a\"..."
    assert '"arguments": "{' not in text
    # the template's default system prompt goes before the tools block, once, as flatten writes it
    ours = template.chatml_template(True, "You're terse.")
    with_default = tok.apply_chat_template(conv, tools=TOOLS, tokenize=False, chat_template=ours)
    assert with_default.count("You're terse.") == 1 and "You're terse.\n\n# Tools" in with_default
    flat = tools.flatten(conv, TOOLS, "You're terse.")
    assert tok.apply_chat_template(flat, tokenize=False, chat_template=ours) == with_default
    # without tools the template is the plain ChatML one
    plain = [USER, {"role": "assistant", "content": "ok"}]
    assert "# Tools" not in tok.apply_chat_template(plain, tokenize=False)


def test_parse_reply_reads_calls_and_names_what_is_wrong():
    text = tools.reply_text({"tool_calls": [CALL, CALL_STR]})
    reply = tools.parse_reply(text)
    assert (
        reply.calls
        == [
            {"name": "get_weather", "arguments": {"city": "Paris"}},
            {"name": "add", "arguments": {"a": 2, "b": 3}},
        ]
        and not reply.problems
        and reply.content == ""
    )
    assert tools.ends_after_calls(text) and not tools.ends_after_calls(text + "\nThe weather is")
    assert tools.parse_reply("<tool_call>\n{name: x}\n</tool_call>").problems == [
        "a <tool_call> block is not JSON"
    ]
    assert "an unclosed <tool_call> tag" in tools.parse_reply('<tool_call>\n{"name": "a"').problems
    assert "the reply writes a <tool_response> itself" in tools.parse_reply(text + "<tool_response>").problems
    assert tools.parse_reply("Just text.").calls == []


def _row(messages, tool_list=(ADD,)):
    return {"tools": list(tool_list), "messages": messages}


def _call(name, arguments):
    return [
        USER,
        {
            "role": "assistant",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
        },
    ]


BAD = {
    "calls a function not in tools": _call("mul", {"a": 1}),
    "arguments are not JSON": _call("add", "{a: 1"),
    "arguments break the schema, missing required": _call("add", {"a": 1}),
    "arguments break the schema, wrong type": _call("add", {"a": 1, "b": "2"}),
    "arguments break the schema, value outside the enum": _call("add", {"a": 1, "b": 2, "mode": "z"}),
    "arguments break the schema, unknown argument": _call("add", {"a": 1, "b": 2, "c": 3}),
    "is a tool result with no call before it": [
        USER,
        {"role": "assistant", "content": "hm"},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "content": "5"},
    ],
}


def test_bad_tool_rows_are_rejected_and_counted_by_reason(tmp_path):
    good = _call("add", '{"a": 1, "b": 2}')
    rows = [_row(m) for m in BAD.values()] + [_row(good), _row(good)]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = records.LoadReport()
    convs = mixture.load(DataConfig(sources=[SourceConfig(path=str(path))]), (), report)
    assert len(convs) == 2 and dict(report.rejected) == {reason: 1 for reason in BAD}
    assert (
        convs[0].messages[-1]["content"]
        == '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    )
    assert convs[0].messages[0]["content"].startswith("# Tools") and convs[0].messages[0]["role"] == "system"


XLAM = {
    "query": "Weather in Oslo in fahrenheit?",
    "tools": json.dumps([{"name": "get_weather", "description": "Weather.", "parameters": {
        "city": {"type": "str", "description": "City."}, "unit": {"type": "str, optional", "default": "c"}}}]),
    "answers": json.dumps([{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "fahrenheit"}}]),
}  # fmt: skip
TOOL_JSON = json.dumps(
    [
        {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
)
SHAREGPT = {
    "tools": TOOL_JSON,
    "conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
        {"from": "observation", "value": '{"temp": 3}'},
        {"from": "gpt", "value": "3 degrees."},
    ],
}
HERMES = {
    "tools": TOOL_JSON,
    "conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {
            "from": "gpt",
            "value": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        },
        {"from": "tool", "value": '<tool_response>\n{"temp": 3}\n</tool_response>'},
        {"from": "gpt", "value": "3 degrees."},
    ],
}
GLAIVE = {
    "system": "SYSTEM: You are a helpful assistant with access to the following functions. Use them if required -\n"
    '{\n    "name": "get_weather",\n    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, '
    '"required": ["city"]}\n}\n',
    "chat": 'USER: Weather in Oslo? \n\n\nASSISTANT: <functioncall> {"name": "get_weather", "arguments": '
    '\'{"city": "Oslo"}\'} <|endoftext|>\n\n\nFUNCTION RESPONSE: {"temp": 3}\n\n\nASSISTANT: 3 degrees. <|endoftext|>\n',
}


@pytest.mark.parametrize(
    "name, row", [("xlam", XLAM), ("sharegpt", SHAREGPT), ("hermes", HERMES), ("glaive", GLAIVE)]
)
def test_public_tool_shapes_convert_to_openai_messages(tmp_path, name, row):
    messages, tool_list = formats.to_conversation(row, "auto", {})
    calls = [m for m in messages if m.get("tool_calls")]
    assert tool_list and tool_list[0]["function"]["name"] == "get_weather"
    assert tools.call_parts(calls[0]["tool_calls"][0])[0] == "get_weather"
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row) + "\n")
    report = records.LoadReport()
    (conv,) = mixture.load(DataConfig(sources=[SourceConfig(path=str(path))]), (), report)
    assert not report.rejected
    text = "\n".join(m["content"] for m in conv.messages)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"' in text
    if name != "xlam":
        assert (
            '<tool_response>\n{"temp": 3}\n</tool_response>' in text
            and conv.messages[-1]["content"] == "3 degrees."
        )
    if name == "glaive":
        assert conv.messages[0]["content"].startswith(
            "You are a helpful assistant with access to the following"
        )


def test_inspect_shows_the_call_and_its_terminator_trained(tmp_path, gemma_like, monkeypatch):
    import yaml

    monkeypatch.setenv("INSTRUCTIFY_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "tools.jsonl"
    data.write_text(json.dumps({"tools": [ADD], "messages": _call("add", {"a": 1, "b": 2})}) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "model": {"name": str(gemma_like)},
                                   "data": {"sources": [{"path": str(data)}], "max_length": 4096}}))  # fmt: skip
    out = tmp_path / "inspect.jsonl"
    assert cli.main(["inspect", "--config", str(cfg), "--data", str(data), "--jsonl", str(out)]) == 0
    (ex,) = [json.loads(line) for line in out.read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(gemma_like)
    template.add_chat_tokens(None, tok)
    trained = tok.decode([t for t in ex["labels"] if t != -100])
    assert trained == '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call><|im_end|>'


@pytest.mark.parametrize("family", FAMILIES)
def test_decisions_are_each_replys_first_token_and_the_token_after_each_call(chat_tokenizers, family):
    """training.decision_weight weights these targets: where a reply chooses text or a call, and after each
    </tool_call> another call or <|im_end|>. Found on the trained ids as the trainer sees them, in every family."""
    import torch

    from instructify.modules import head

    tok, tokens = chat_tokenizers[family]
    closing = tools.closing_ids(tok)
    for shape in ("parallel, string arguments", "two steps, grouped results", "tools offered, text answer"):
        conv = CONVERSATIONS[shape]
        enc = template.encode(tok, [tools.flatten(conv, TOOLS)], tokens)[0]
        labels = torch.tensor([[i if m else -100 for i, m in zip(enc.input_ids, enc.assistant_masks)]])
        found = head.decisions(labels[:, 1:], [closing])[0].nonzero().flatten().tolist()
        replies = [m for m in conv if m["role"] == "assistant"]
        calls = sum(len(m.get("tool_calls") or []) for m in replies)
        assert len(found) == len(replies) + calls, (shape, [tok.decode(enc.input_ids[t + 1]) for t in found])
        for t in found:
            before = tok.decode(enc.input_ids[: t + 1])
            assert not enc.assistant_masks[t] or before.endswith(tools.CALL_CLOSE), (shape, before[-40:])
