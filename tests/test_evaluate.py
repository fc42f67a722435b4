"""Metric logic on crafted generations (unit level); the whole eval runs on a tiny real model in test_end_to_end."""

import pytest

from train.evaluate import Reply, classify, summarize, table, wilson

IM_END, EOS = 100, 1


@pytest.mark.parametrize(
    "ids, expected",
    [
        ([5, 6, IM_END, 0, 0], (2, True, False)),  # stopped on <|im_end|>; pad after it ignored
        ([IM_END], (0, True, False)),  # empty reply still stops
        ([5, 6, EOS, 0], (2, False, False)),  # ended on the base eos: not a ChatML stop
        ([5, 6, 7, 8], (4, False, True)),  # hit max_new_tokens
        ([5, 6], (2, False, False)),  # shorter than the budget with no stop token (cannot happen in generate)
    ],
)
def test_classify(ids, expected):
    assert classify(ids, {IM_END, EOS}, IM_END, max_new_tokens=4) == expected


def test_wilson_interval():
    lo, hi = wilson(0, 100)
    assert lo == 0 and 0.03 < hi < 0.04
    lo, hi = wilson(95, 100)
    assert 0.88 < lo < 0.89 and 0.97 < hi < 0.98
    assert wilson(0, 0) == (0.0, 1.0)


def test_summarize_and_table():
    replies = [Reply("a", 1, "hi", 1, True, False)] * 3 + [Reply("b", 3, "x" * 9, 64, False, True)]
    m = summarize(replies)
    assert (m["n"], m["stopped"], m["stop_rate"], m["runaway_rate"]) == (4, 3, 0.75, 0.25)
    text = table({"trained": m, "base": {**m, "stop_rate": 0.0, "stopped": 0}})
    assert text.splitlines()[2].startswith("| base | 0.0%") and "| trained | 75.0%" in text
