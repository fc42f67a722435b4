"""Schema-constrained tool calls (instructify/evals/tool_grammar.py): what the grammar lets through, and the tiny
tool caller held to a schema it never learnt, in a batch and with rows joining as others end."""

from __future__ import annotations

import pytest
from conftest import TOOL_CONVERSATIONS, weather
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import get_json_schema

from instructify.chat import tools as chat_tools
from instructify.evals import conformance, tool_calls, tool_grammar

pytest.importorskip("xgrammar")

TOWN = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"town": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["town"],
        },
    },
}
# town is an enum so the test turns on the key the grammar holds, not on whether a 700-token model ends a free
# string it never learnt (with a free string, seeds 0, 2 and 3 of the fixture loop inside the value)
TOWN_ONLY = {"type": "function", "function": {**TOWN["function"], "parameters": {
    "type": "object", "properties": {"town": {"type": "string", "enum": ["paris", "rome"]}}, "required": ["town"]}}}  # fmt: skip
LEARNT = [get_json_schema(weather)]
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture(scope="module")
def tiny(tool_model):
    return AutoModelForCausalLM.from_pretrained(tool_model), AutoTokenizer.from_pretrained(tool_model)


def _accepts(
    grammars, tokenizer, text: str, choice: str = "auto", prefix: str = "", parallel: bool = True
) -> bool:
    m = grammars.matcher([TOWN, ADD], choice, prefix, parallel)
    ids = tokenizer(text, add_special_tokens=False).input_ids + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    return all(m.inner.accept_token(t) for t in ids) and m.inner.is_terminated()


def call(name: str, arguments: dict) -> str:
    return chat_tools.call_text({"name": name, "arguments": arguments})


@pytest.mark.parametrize(
    ("text", "choice", "ok"),
    [
        ("It is sunny.", "auto", True),
        (call("add", {"a": 1, "b": 2}), "auto", True),
        ("Sure.\n" + call("weather", {"town": "paris"}) + "\n" + call("add", {"a": 1, "b": 2}), "auto", True),
        (call("add", {"a": 1}), "auto", False),  # missing required
        (call("add", {"a": 1, "b": "two"}), "auto", False),  # wrong type
        (call("weather", {"town": "paris", "unit": "k"}), "auto", False),  # outside the enum
        (call("weather", {"city": "paris"}), "auto", False),  # not in the schema
        (call("mul", {"a": 1, "b": 2}), "auto", False),  # not offered
        (call("add", {"a": 1, "b": 2}) + " and more", "auto", False),  # text after the last call
        (call("add", {"a": 1, "b": 2}) + "\n<tool_response>\n3\n</tool_response>", "auto", False),
        ("<tool_response>\n3\n</tool_response>", "auto", False),
        ("It is sunny.", "required", False),
        (call("add", {"a": 1, "b": 2}), "required", True),
        (call("add", {"a": 1, "b": 2}), "weather", False),
        (call("weather", {"town": "rome"}) + "\n" + call("add", {"a": 1, "b": 2}), "weather", True),
    ],
)
def test_what_the_grammar_lets_through(tiny, text, choice, ok):
    _, tok = tiny
    grammars = tool_grammar.Grammars(tok, len(tok), {tok.convert_tokens_to_ids("<|im_end|>")})
    assert _accepts(grammars, tok, text, choice) is ok


def test_a_prefix_written_into_the_prompt_counts_as_written(tiny):
    _, tok = tiny
    grammars = tool_grammar.Grammars(tok, len(tok), {tok.convert_tokens_to_ids("<|im_end|>")})
    head = '<tool_call>\n{"name": "add", "arguments":'
    assert _accepts(grammars, tok, ' {"a": 1, "b": 2}}\n</tool_call>', "add", head)
    assert not _accepts(grammars, tok, ' {"a": 1}}\n</tool_call>', "add", head)
    with pytest.raises(ValueError, match="does not fit"):
        grammars.matcher([ADD], "add", '<tool_call>\n{"name": "mul"')


@pytest.mark.parametrize("choice", ["auto", "required", "weather"])
def test_parallel_tool_calls_false_allows_one_call(tiny, choice):
    _, tok = tiny
    grammars = tool_grammar.Grammars(tok, len(tok), {tok.convert_tokens_to_ids("<|im_end|>")})
    one, two = (
        call("weather", {"town": "rome"}),
        call("weather", {"town": "rome"}) + "\n" + call("add", {"a": 1, "b": 2}),
    )
    assert _accepts(grammars, tok, one, choice, parallel=False)
    assert not _accepts(grammars, tok, two, choice, parallel=False)
    assert _accepts(grammars, tok, "It is sunny.", choice, parallel=False) is (choice == "auto")


def test_none_and_no_tools_hold_nothing(tiny):
    _, tok = tiny
    grammars = tool_grammar.Grammars(tok, len(tok), {tok.convert_tokens_to_ids("<|im_end|>")})
    assert grammars.matcher([ADD], "none") is None and grammars.matcher([], "auto") is None


@pytest.mark.parametrize("batch_size", [2, 1])
def test_the_tool_caller_held_to_a_schema_it_never_learnt(tiny, batch_size):
    """It learnt weather(city). Offered weather(town) and required to call, free it writes no valid call; held,
    it calls weather with `town`, in a batch with a chat prompt left free (auto, offered the tool it learnt, as in
    training, so that it chats), or with the chat prompt joining when the call has ended (batch 1)."""
    model, tok = tiny
    prompts = [
        {"id": "w", "prior_turns": 1, "messages": TOOL_CONVERSATIONS[0][:1], "tools": [TOWN_ONLY], "offered": [TOWN_ONLY],
         "choice": "required", "parallel": False},
        {"id": "c", "prior_turns": 1, "messages": TOOL_CONVERSATIONS[2][:1], "tools": LEARNT, "offered": LEARNT},
    ]  # fmt: skip
    case = {"tools": [TOWN_ONLY], "gold": [{"name": "weather", "arguments": {"town": "paris"}}]}
    free = conformance.generate(model, tok, prompts, 80, batch_size)
    held = conformance.generate(model, tok, prompts, 80, batch_size, constrained=True)
    free_verdict = tool_calls.judge(case, free[0].text, free[0].stopped)
    assert not (free_verdict["conforms"] and chat_tools.parse_reply(free[0].text).calls), free[0]
    verdict = tool_calls.judge(case, held[0].text, held[0].stopped)
    assert verdict["conforms"], (held[0], verdict)
    assert chat_tools.parse_reply(held[0].text).calls[0]["arguments"].keys() == {"town"}, held[0]
    assert held[1].text == free[1].text  # a text reply is left as it was
