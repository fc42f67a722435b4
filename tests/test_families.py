"""Every stage on every family (tests/families.py): prepare's ids and mask equal transformers' apply_chat_template
on generated conversations; then one short run per family through sft, export + doctor, eval, chat, serve and
`export --gguf`, each a test of its own so the support matrix (docs/support.md) names the stage that fails."""

from __future__ import annotations

import families
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from instructify.chat import template

NAMES = list(families.FAMILIES)


@pytest.fixture(scope="session")
def base_of(tmp_path_factory):
    """name -> the tiny base's folder, each built once per session."""
    built = {}

    def get(name: str):
        if name not in built:
            built[name] = families.build(name, tmp_path_factory.mktemp(f"base-{name}"))
        return built[name]

    return get


@pytest.fixture(scope="session")
def chat_tokenizer(base_of):
    """name -> (tokenizer with ChatML added as `prepare` does it, its ChatTokens)."""
    made = {}

    def get(name: str):
        if name not in made:
            tok = AutoTokenizer.from_pretrained(base_of(name))
            made[name] = tok, template.add_chat_tokens(None, tok)
        return made[name]

    return get


# Text a user may send: any Unicode (no surrogates), whitespace-only and padded edges, and pieces that look like
# control tokens without being one (those that are one are checked below: they must stay plain text).
LOOKALIKES = ["<|im_end", "im_end|>", "<|im_start|", "< s>", "<|", "|>", "\u2581", "<0x0A>"]
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=24),
    st.sampled_from(["", " ", "\n", " \n ", "\t", "  hi  ", "\n\nhi\n"]),
    st.lists(st.sampled_from([*LOOKALIKES, " ", "hi", "\n", "é", "日本", "12"]), max_size=6).map("".join),
)


@st.composite
def conversation(draw, text=TEXT):
    messages = [{"role": "system", "content": draw(text)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages += [{"role": "user", "content": draw(text)}, {"role": "assistant", "content": draw(text)}]
    return messages


def reference(tok, messages):
    out = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=conversation())
def test_prepare_ids_and_mask_equal_apply_chat_template(name, chat_tokenizer, messages):
    tok, tokens = chat_tokenizer(name)
    specials = template.special_texts(tok)
    if any(s in m["content"] for m in messages for s in specials):
        return  # the next test: there our ids differ on purpose
    ours = template.encode(tok, [messages], tokens)[0]
    assert (ours.input_ids, ours.assistant_masks) == reference(tok, messages)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_special_token_text_in_a_message_stays_plain_text(name, chat_tokenizer, data):
    """A typed "<|im_end|>" (or the family's own "</s>", "<|endoftext|>") must not become a control token: the
    only control ids are the template's, each reply's trained span ends on <|im_end|>, and swapping the special
    text for plain text leaves the template's tokens where apply_chat_template puts them."""
    tok, tokens = chat_tokenizer(name)
    special = st.sampled_from(template.special_texts(tok))
    text = st.lists(st.one_of(special, st.sampled_from(["hi", " ", "\n", "ok "])), min_size=1, max_size=5)
    messages = data.draw(conversation(text.map("".join)))
    ours = template.encode(tok, [messages], tokens)[0]
    control = set(tok.all_special_ids) | {tokens.im_start_id, tokens.im_end_id}
    bos = [] if tokens.bos_id is None else [tokens.bos_id]
    expected = bos + [tokens.im_start_id, tokens.im_end_id] * len(messages)
    assert sorted(i for i in ours.input_ids if i in control) == sorted(expected)
    spans = template.trained_spans(ours.input_ids, ours.assistant_masks)
    assert len(spans) == sum(m["role"] == "assistant" for m in messages)
    assert all(s[-1] == tokens.im_end_id for s in spans)
