"""Tool calling through `instructify serve` with the official openai client: a two-step loop that executes the
call (the model calls `weather`, gets its result back as a `tool` message, answers from it), streamed as OpenAI
streams calls, and each tool_choice."""

from __future__ import annotations

import json
import threading

import openai
import pytest
from conftest import weather
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import get_json_schema

from instructify.serving import server as server_lib
from instructify.serving import tool_replies

TOOLS = [get_json_schema(weather)]
ASK = [{"role": "user", "content": "what is the weather in paris"}]
FUNCTIONS = {"weather": weather}


@pytest.fixture(scope="module")
def client(tool_model):
    model, tok = AutoModelForCausalLM.from_pretrained(tool_model), AutoTokenizer.from_pretrained(tool_model)
    server = server_lib.make_server(model, tok, "tiny-tools", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    yield openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="none", max_retries=0, timeout=60)
    server.shutdown()


def _run(call) -> str:
    return json.dumps(FUNCTIONS[call.function.name](**json.loads(call.function.arguments)))


def test_two_step_loop_executes_the_call_and_answers_from_its_result(client):
    first = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, max_tokens=60)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "paris"}
    # the assistant message goes back as the client returned it (arguments a JSON string), then the result
    messages = ASK + [choice.message.model_dump(exclude_none=True)]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": _run(call)})
    second = client.chat.completions.create(model="m", messages=messages, tools=TOOLS, max_tokens=60)
    assert second.choices[0].message.content == "it is 21 degrees in paris"
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls


def test_a_streamed_call_arrives_as_openai_streams_it(client):
    stream = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, max_tokens=60, stream=True)
    calls, content, reasons = {}, "", []
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for d in delta.tool_calls or []:  # the accumulation every OpenAI streaming client does
            entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = d.id or entry["id"]
            entry["name"] += (d.function.name or "") if d.function else ""
            entry["arguments"] += (d.function.arguments or "") if d.function else ""
        reasons.append(chunk.choices[0].finish_reason)
    assert content == "" and reasons[-1] == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == {"city": "paris"}


def test_a_chat_with_tools_offered_stays_text(client):
    messages = [{"role": "user", "content": "hi there how are you doing today"}]
    reply = client.chat.completions.create(model="m", messages=messages, tools=TOOLS, max_tokens=40)
    assert reply.choices[0].message.content == "im doing good thanks and you"
    assert reply.choices[0].finish_reason == "stop" and not reply.choices[0].message.tool_calls


def test_tool_choice_none_leaves_the_tools_out_and_named_forces_the_call(client):
    reply = client.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=30
    )
    assert not reply.choices[0].message.tool_calls and reply.choices[0].finish_reason != "tool_calls"
    named = {"type": "function", "function": {"name": "weather"}}
    for choice in ("required", named):
        reply = client.chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, tool_choice=choice, max_tokens=60
        )
        (call,) = reply.choices[0].message.tool_calls
        assert call.function.name == "weather" and reply.choices[0].finish_reason == "tool_calls"


def test_the_splitter_holds_back_a_partial_tag_and_passes_broken_blocks_on_as_text():
    text = 'Sure.<tool_call>\n{"name": "weather", "arguments": {"city": "paris"}}\n</tool_call>\n<tool_call>oops</tool_call>'
    for size in (1, 3, 7, len(text)):  # any way the engine cuts the text into pieces
        splitter = tool_replies.StreamSplitter()
        events = [
            e for i in range(0, len(text), size) for e in splitter.feed(text[i : i + size])
        ] + splitter.finish()
        kinds = [k for k, _ in events]
        assert "".join(v for k, v in events if k == "text") == "Sure.<tool_call>oops</tool_call>", size
        assert kinds.count("call") == 1 and events[kinds.index("call")][1]["function"]["name"] == "weather"


def test_the_tool_check_through_a_server_judges_what_the_client_received(client, tmp_path):
    """tool_engines (make check-engines' path for llama-server, vLLM and serve) on the conversations the tiny model
    knows: every turn a conforming, right answer, the calls as the client received them."""
    from conftest import TOOL_CONVERSATIONS

    from instructify.evals import tool_engines

    path = tmp_path / "heldout.jsonl"
    rows = [{"id": f"r{i}", "tools": TOOLS, "messages": c} for i, c in enumerate(TOOL_CONVERSATIONS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = tool_engines.check(client, "m", str(path), 10, 60, workers=2)
    assert (result["n"], result["calls_due"], result["text_due"]) == (4, 2, 2)
    assert result["conforms"] == result["right"] == 1.0 and result["engine_errors"] == 0, result["problems"]
    first = result["replies"][0]
    assert first["reply"] == '<tool_call>\n{"name": "weather", "arguments": {"city": "paris"}}\n</tool_call>'


# an enum, as in test_tool_grammar.py: the test turns on the key, not on the tiny model ending a free string
TOWN = [{"type": "function", "function": {"name": "weather", "description": "Current weather in a city.", "parameters": {
    "type": "object", "properties": {"town": {"type": "string", "enum": ["paris", "rome"]}}, "required": ["town"]}}}]  # fmt: skip


@pytest.mark.parametrize("held", [True, False])
def test_required_calls_are_held_to_a_schema_the_model_never_learnt(tool_model, held):
    """The tiny caller learnt weather(city). Offered weather(town) with tool_choice required, the client gets a
    weather call with `town` when the server holds calls to their schemas (the default), and no such call when
    it does not (--no-tool-grammar)."""
    model, tok = AutoModelForCausalLM.from_pretrained(tool_model), AutoTokenizer.from_pretrained(tool_model)
    server = server_lib.make_server(model, tok, "tiny-tools", port=0, tool_grammar=held)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    client = openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="none", max_retries=0, timeout=60)
    try:
        got = client.chat.completions.create(
            model="m",
            messages=ASK,
            tools=TOWN,
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=80,
            temperature=0,
        ).choices[0]
    finally:
        server.shutdown()
    calls = got.message.tool_calls or []
    valid = [
        c
        for c in calls
        if c.function.name == "weather" and json.loads(c.function.arguments).keys() == {"town"}
    ]
    assert bool(valid and got.finish_reason == "tool_calls") is held, got
