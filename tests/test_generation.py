"""Shared generation: a prefix run once and its cache shared gives each row what it gets alone; plain-text
completion is cut at its stop string."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify.evals import generation

PREFIX = "Hello there, a short preamble.\n"
TEXTS = ["a b c", "one two three four five six", "x", "the quick brown fox"]


def alone(model, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        return model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)[0, len(ids) :].tolist()


MORE = TEXTS + ["seven", "more words", "b b b", "zz top"]


def ends_by_content(row: list[int]) -> tuple[list[int], bool]:
    """Ends a row after 2 to 10 tokens, by its first token: rows of one batch end at different steps."""
    end = 2 + row[0] % 9
    return row[:end], len(row) >= end


@pytest.mark.parametrize("with_prefix", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_rows_that_join_mid_run_equal_each_prompt_alone(gemma_like, with_prefix, batch_size):
    """Continuous batching: rows end at different steps and waiting prompts take their places (one at a time at
    batch 3, by ones and pairs); each reply is still the one generate() gives its prompt alone."""
    model = AutoModelForCausalLM.from_pretrained(gemma_like, dtype=torch.float64)
    tok = AutoTokenizer.from_pretrained(gemma_like)
    head = tok(PREFIX)["input_ids"] if with_prefix else []
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in MORE]
    # within the tiny model's sliding window (64): prefix + prompt + 12 new tokens
    assert len(head) + max(map(len, prompts)) + 12 < model.config.sliding_window
    got = generation.generate_ids(
        model, prompts, 12, batch_size, tok.pad_token_id, ends_by_content, prefix=head or None
    )
    expected = [ends_by_content(alone(model, head + p, 12))[0] for p in prompts]
    assert len({len(e) for e in expected}) > 2  # the rows do end at different steps
    assert got == expected


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
