"""Metric logic on crafted generations (unit level); the whole eval runs on a tiny real model in test_end_to_end."""

import pytest

from instructify.evals.conformance import Reply, length_distribution, summarize, wilson
from instructify.evals.generation import classify
from instructify.evals.report import table

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
    text = table({"reference": m, "trained": m, "base": {**m, "stop_rate": 0.0, "stopped": 0}})
    assert [line.split(" | ")[0] for line in text.splitlines()[2:]] == ["| base", "| trained", "| reference"]
    assert text.splitlines()[2].startswith("| base | 4 | 0.0% (") and "| trained | 4 | 75.0%" in text


def test_reply_lengths_by_prior_turns():
    replies = [Reply(str(i), 1, "a", i, True, False) for i in range(1, 11)]
    replies += [Reply("x", 3, "b", 50, False, True), Reply("y", 3, "c", 30, True, False)]
    m = summarize(replies)
    assert m["reply_tokens_by_prior_turns"]["1"] == {
        "n": 10,
        "mean": 5.5,
        "p10": 2,
        "median": 6,
        "p90": 10,
        "max": 10,
    }
    assert m["reply_tokens_by_prior_turns"]["3"]["n"] == 2 and m["reply_tokens"]["max"] == 50
    assert length_distribution([]) == {"n": 0}


@pytest.mark.parametrize(
    "text, leak",
    [
        ("sure, here you go", False),
        ("fine thanks<|im_start|>user\nand you?", True),  # invented next turn
        ("fine <|im_end|> as text", True),
        ("fine thanks\nuser\nwhat about you", True),  # role header without special tokens
        ("fine thanks\nUser: what about you", True),
        ("the user manual is long", False),  # the word, not a header
    ],
)
def test_leak(text, leak):
    from instructify.evals.conformance import leaks

    assert leaks(text) == leak


def test_loop_needs_three_repeats_of_eight_tokens():
    from instructify.evals.conformance import loops

    sentence = list(range(8))
    assert loops(sentence * 3) and not loops(sentence * 2 + [99]) and not loops(list(range(40)))


@pytest.mark.parametrize(
    "text, loop",
    [
        ("I like it. I like it.", True),
        ("I'm not sure! i'm NOT sure...", True),  # case and punctuation aside
        ("We went to the lake.\nWe went to the lake", True),  # a line break ends a sentence too
        ("Yes. Yes. Yes, I think so.", False),  # one-word sentences repeat in ordinary speech
        ("I like it. I like it a lot.", False),
        ("I went there, I went there", False),  # one sentence, no sentence said twice
    ],
)
def test_a_sentence_said_twice_is_a_loop(text, loop):
    from instructify.evals.conformance import looped, repeats_sentence

    assert repeats_sentence(text) == loop
    assert looped(list(range(20)), text) == loop  # no token loop here: the sentence decides


def test_clean_stop_and_empty_rates():
    replies = [
        Reply("a", 1, "hello there", 2, True, False),
        Reply("b", 1, "", 0, True, False),  # immediate terminator: stopped, but empty
        Reply("c", 1, "hi<|im_start|>user", 3, True, False, leak=True),
        Reply("d", 1, "x", 64, False, True, loop=True),
    ]
    m = summarize(replies)
    assert (m["stopped"], m["clean_stopped"], m["empty"], m["leaked"], m["looped"]) == (3, 1, 1, 1, 1)
    assert m["clean_stop_rate"] == 0.25 and m["clean_stop_rate_ci95"][0] < 0.25 < m["clean_stop_rate_ci95"][1]


def test_eval_on_a_tiny_model_that_stops_equals_one_generate_per_prompt(chat_model):
    import torch
    from conftest import conversations
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructify.evals import conformance

    model, tok = AutoModelForCausalLM.from_pretrained(chat_model), AutoTokenizer.from_pretrained(chat_model)
    prompts = [
        {"id": r["id"], "messages": r["messages"][:k], "prior_turns": k}
        for r in conversations(6)
        for k in (1, 3)
        if k < len(r["messages"])
    ]
    replies = conformance.generate(model, tok, prompts, max_new_tokens=12, batch_size=4)
    for p, r in zip(prompts, replies):
        batch = tok.apply_chat_template(
            p["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=12, do_sample=False)[
                0, batch["input_ids"].shape[1] :
            ]
        expected = tok.decode(out, skip_special_tokens=False).split("<|im_end|>")[0]
        assert (r.text, r.stopped) == (expected, "<|im_end|>" in tok.decode(out))
    m = conformance.summarize(replies)
    # learnt replies stop (up to 9 tokens); the 12-token budget cuts none of them
    assert m["stop_rate"] == 1.0 and m["clean_stop_rate"] == 1.0 and m["loop_rate"] == 0.0
    assert set(m["reply_tokens_by_prior_turns"]) == {"1", "3"}
