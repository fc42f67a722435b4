"""The tool-call check (instructify/evals/tool_calls.py): each verdict on planted replies, the whole check on the
tiny tool caller, BFCL plumbing, and the tables."""

from __future__ import annotations

import json

import pytest
from conftest import TOOL_CONVERSATIONS, WEATHER_CALL, weather
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import get_json_schema

from instructify.evals import report, tool_calls

TOOLS = [{"type": "function", "function": get_json_schema(weather)["function"]}]
CALL = '<tool_call>\n{"name": "weather", "arguments": {"city": "paris"}}\n</tool_call>'
DUE = {"id": "a", "kind": "single", "tools": TOOLS, "messages": [], "gold": [{"name": "weather", "arguments": {"city": "Paris"}}]}  # fmt: skip
TEXT = {**DUE, "kind": "no_tool", "gold": []}


@pytest.mark.parametrize(
    ("case", "text", "stopped", "conforms", "right", "problem"),
    [
        (DUE, CALL, True, True, True, None),  # case of a string value does not matter
        (DUE, CALL.replace("paris", "rome"), True, True, False, None),
        (DUE, CALL, False, False, False, "did not stop"),
        (DUE, CALL + "\nand more", True, False, False, "text after the last call"),
        (DUE, CALL.replace('"weather"', '"forecast"'), True, False, False, "calls a function not in tools"),
        (DUE, CALL.replace('"paris"', "7"), True, False, False, "arguments break the schema"),
        (DUE, CALL.replace('"city"', '"town"'), True, False, False, "arguments break the schema"),
        (
            DUE,
            CALL + "\n<tool_response>\n21\n</tool_response>",
            True,
            False,
            False,
            "writes a <tool_response>",
        ),
        (DUE, CALL[:-4], True, False, False, "unclosed"),
        (DUE, "It is sunny.", True, True, False, None),
        (TEXT, "Jane Austen.", True, True, True, None),
        (TEXT, CALL, True, True, False, None),  # a valid call, but none was due
    ],
)
def test_each_verdict(case, text, stopped, conforms, right, problem):
    v = tool_calls.judge(case, text, stopped)
    assert (v["conforms"], v["right"]) == (conforms, right), v
    assert problem is None or any(problem in p for p in v["problems"]), v["problems"]


def test_parallel_calls_match_in_any_order_and_numbers_by_value():
    gold = [{"name": "f", "arguments": {"x": 3}}, {"name": "g", "arguments": {"y": [1.0, "A"]}}]
    assert tool_calls.same_calls([{"name": "g", "arguments": {"y": [1, "a"]}}, {"name": "f", "arguments": {"x": 3.0}}], gold)  # fmt: skip
    assert not tool_calls.same_calls([gold[0]], gold)
    assert not tool_calls.same_calls([gold[0], gold[0]], gold)


def _heldout(tmp_path):
    rows = [{"id": f"c{i}", "kind": k, "tools": TOOLS, "messages": c} for i, (k, c) in enumerate(zip(("single", "two_step", "no_tool"), TOOL_CONVERSATIONS))]  # fmt: skip
    london = {**WEATHER_CALL, "function": {"name": "weather", "arguments": json.dumps({"city": "london"})}}
    rows.append({"id": "c3", "kind": "single", "tools": TOOLS,
                 "messages": [TOOL_CONVERSATIONS[0][0], {"role": "assistant", "tool_calls": [london]}]})  # fmt: skip
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cases_are_every_assistant_turn_with_the_conversation_before_it(tmp_path):
    got = tool_calls.cases(_heldout(tmp_path), 10)
    assert [c["id"] for c in got] == ["c0:1", "c1:1", "c1:3", "c2:1", "c3:1"]
    assert [len(c["messages"]) for c in got] == [1, 1, 3, 1, 1]
    assert got[2]["gold"] == [] and got[4]["gold"] == [{"name": "weather", "arguments": {"city": "london"}}]
    assert len(tool_calls.cases(_heldout(tmp_path), 1)) == 1


def test_the_check_on_the_tiny_tool_caller(tool_model, tmp_path):
    model, tok = AutoModelForCausalLM.from_pretrained(tool_model), AutoTokenizer.from_pretrained(tool_model)
    c = tool_calls.check(model, tok, _heldout(tmp_path), 10, 40, 4)
    # it calls weather(paris) where a call is due (right but for london), answers from the result, chats
    assert [r["right"] for r in c["replies"]] == [True, True, True, True, False], c["replies"]
    assert c["conforms"] == 1.0 and c["right_calls"] == pytest.approx(2 / 3) and c["false_calls"] == 0.0
    assert c["by_kind"]["single"] == {"n": 2, "right": 1} and c["too_long"] == 0
    b = tool_calls.run_bfcl(model, tok, 1, 16, 4)
    assert b["items"] + sum(b["too_long"].values()) == 5
    for r in b["replies"]:  # an irrelevance item passes exactly when the reply made no call
        if r["id"].startswith("irrelevance") and "irrelevance" in b["categories"]:
            assert b["categories"]["irrelevance"]["passed"] == (
                not tool_calls.chat_tools.parse_reply(r["reply"]).calls
            )
    entries = {"trained": {"check": c, "bfcl": b}}
    table = report.tools_table(entries)
    assert "| trained | 5 | 100.0%" in table and "66.7% of 3" in table
    assert "FunctionGemma" in report.bfcl_table(entries) and "61.6%" in report.bfcl_table(entries)
