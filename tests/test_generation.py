"""Shared generation: a prefix run once and its cache shared gives each row what it gets alone; plain-text
completion is cut at its stop string."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify.evals import generation

PREFIX = "Hello there, a short preamble.\n"
TEXTS = ["a b c", "one two three four five six", "x", "the quick brown fox"]


def alone(model, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        return model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)[0, len(ids) :].tolist()


def test_shared_prefix_cache_equals_each_prompt_alone(gemma_like, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(gemma_like, dtype=torch.float64)
    tok = AutoTokenizer.from_pretrained(gemma_like)
    monkeypatch.setattr(generation, "FIRST_ROUND", 5)  # the second round starts from the shared cache too
    head = tok(PREFIX)["input_ids"]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    never = lambda row: (row, False)
    # within the tiny model's sliding window (64): prefix + prompt + 12 new tokens
    assert len(head) + max(map(len, prompts)) + 12 < model.config.sliding_window
    got = generation.generate_ids(model, prompts, 12, 3, tok.pad_token_id, never, prefix=head)
    assert got == [alone(model, head + p, 12) for p in prompts]


def test_complete_cuts_at_the_stop_string(gemma_like):
    model, tok = AutoModelForCausalLM.from_pretrained(gemma_like), AutoTokenizer.from_pretrained(gemma_like)
    plain = generation.complete(model, tok, TEXTS, "\x00never", 10, 4, prefix=PREFIX)
    assert all(not reached for _, reached in plain)
    # a stop string taken from each row's own continuation: the text before it, and reached
    checked = 0
    for text, (full, _) in zip(TEXTS, plain):
        if len(full.strip()) < 4:
            continue
        checked += 1
        stop = full.strip()[2:4]
        ((cut, reached),) = generation.complete(model, tok, [text], stop, 10, 1, prefix=PREFIX)
        assert reached and cut == full[: full.index(stop)]
    assert checked >= 2
