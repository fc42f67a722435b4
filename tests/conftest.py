"""Tiny real models and tokenizers, built offline in-process: a Gemma-3-shaped base without ChatML tokens
(tied embeddings, BOS), a SmolLM2-shaped base that already has `<|im_start|>`/`<|im_end|>` (no BOS), and a
Llama-3-shaped base with an untied output layer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

CORPUS = [
    "hi there how are you doing today",
    "im doing good thanks and you",
    "i just took a nap but it did not help",
    "what did you do this weekend",
    "we went to the lake and went swimming",
    "that sounds like fun i love the lake",
    "do you have any plans for tonight",
    "not really maybe watch a movie",
] * 20


def conversations(n: int = 24) -> list[dict]:
    """Small `messages` rows: 1-3 user/assistant exchanges built from the corpus."""
    rows = []
    for i in range(n):
        msgs = []
        for k in range(1 + i % 3):
            msgs.append({"role": "user", "content": CORPUS[(i + 2 * k) % 8]})
            msgs.append({"role": "assistant", "content": CORPUS[(i + 2 * k + 1) % 8]})
        rows.append({"id": f"c{i}", "messages": msgs})
    return rows


def _tokenizer(
    special: list[str], bos: str | None, eos: str, pad: str | None, unk: str, corpus=CORPUS, size=400
) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=unk))
    # Byte-level BPE: every string (newlines included) tokenises and decodes back exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=size, special_tokens=special, initial_alphabet=alphabet)
    )
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk
    )


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# Both tiny bases: two layers, grouped-query attention (2 heads, 1 KV head), width 64.
TINY_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
)


@pytest.fixture(scope="session")
def gemma_like(tmp_path_factory) -> Path:
    """Gemma-3-shaped base: <bos> added by the tokenizer, eos <eos>, pad <pad>, tied embeddings, no ChatML."""
    torch.manual_seed(0)
    tokenizer = _tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>", "<eos>", "<pad>", "<unk>")
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        head_dim=32,
        max_position_embeddings=512,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _save(Gemma3ForCausalLM(config), tokenizer, tmp_path_factory.mktemp("gemma-like"))


@pytest.fixture(scope="session")
def smol_like(tmp_path_factory) -> Path:
    """SmolLM2-shaped base: ChatML tokens already in the vocabulary, eos <|endoftext|>, no BOS, no pad."""
    torch.manual_seed(0)
    tokenizer = _tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"], None, "<|endoftext|>", None, "<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
    return _save(LlamaForCausalLM(config), tokenizer, tmp_path_factory.mktemp("smol-like"))


@pytest.fixture(scope="session")
def llama3_like(tmp_path_factory) -> Path:
    """Llama-3-shaped base: an untied output layer, <|begin_of_text|> added, eos <|end_of_text|>, no pad, no
    ChatML: the new rows must train in both layers."""
    torch.manual_seed(0)
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"]
    tokenizer = _tokenizer(special, special[0], special[1], None, special[2])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return _save(LlamaForCausalLM(config), tokenizer, tmp_path_factory.mktemp("llama3-like"))


@pytest.fixture
def chat_file(tmp_path) -> Path:
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in conversations()))
    return path


SMOLLM2_STYLE = (  # SmolLM2-Instruct's template shape: ChatML, default system prompt, no generation markers
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _reply_mask(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """ids of the rendered conversation and 1 on each reply up to its <|im_end|>, found as what follows each
    generation prompt: works for any ChatML template, generation markers or not."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    render = lambda msgs, gen: tokenizer.apply_chat_template(
        msgs, add_generation_prompt=gen, tokenize=True, return_dict=True
    )["input_ids"]
    ids = render(messages, False)
    mask = [0] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start = len(render(messages[:i], True))
            for p in range(start, ids.index(im_end, start) + 1):
                mask[p] = 1
    return ids, mask


def assistant_mask(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, mask) from the saved template's {% generation %} markers (mask=1 on trained tokens), as
    transformers gives them: what tests compare instructify/chat/template.py's own encoder and masks with."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


def _fit_to_stop(model, tokenizer, rows: list[dict], steps: int, lr: float = 1e-2) -> None:
    """Full fine-tune on the assistant tokens (replies and their <|im_end|>) until the tiny model has learnt
    the conversations by heart: greedy replies then end on <|im_end|> like a trained chat model's."""
    encoded = [_reply_mask(tokenizer, r["messages"]) for r in rows]
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in encoded])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in encoded])
    labels = torch.tensor(
        [[i if m else -100 for i, m in zip(ids, mask)] + [-100] * (width - len(ids)) for ids, mask in encoded]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory, gemma_like) -> Path:
    """A tiny chat model as instructify exports it (ChatML, eos <|im_end|> in all three places) that has
    learnt the test conversations, so its replies stop: for chat, eval and serving tests."""
    from instructify.chat import template

    torch.manual_seed(0)
    model, tok = AutoModelForCausalLM.from_pretrained(gemma_like), AutoTokenizer.from_pretrained(gemma_like)
    template.add_chat_tokens(model, tok)
    _fit_to_stop(model, tok, conversations(), steps=60)
    return _save(model, tok, tmp_path_factory.mktemp("chat-model"))


@pytest.fixture(scope="session")
def smol_instruct(tmp_path_factory, smol_like) -> Path:
    """A SmolLM2-Instruct-shaped reference: its own ChatML template (default system prompt, no generation
    markers), eos <|im_end|>, trained on the test conversations (with that system prompt) so it stops."""
    torch.manual_seed(0)
    model, tok = AutoModelForCausalLM.from_pretrained(smol_like), AutoTokenizer.from_pretrained(smol_like)
    tok.chat_template = SMOLLM2_STYLE
    tok.eos_token = "<|im_end|>"
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model.config.eos_token_id = model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    _fit_to_stop(model, tok, conversations(), steps=60)
    return _save(model, tok, tmp_path_factory.mktemp("smol-instruct"))


@pytest.fixture
def tiny_config(tmp_path, gemma_like, chat_file):
    """Factory: the config file of a short LoRA run of the tiny Gemma-shaped model on the test conversations,
    writing to tmp_path/<name>; `training` and `eval` entries override the defaults."""
    import yaml

    def make(name: str = "run", training: dict | None = None, eval: dict | None = None) -> Path:
        path = tmp_path / f"{name}.yaml"
        config = {
            "output_dir": str(tmp_path / name),
            "model": {"name": str(gemma_like), "dtype": "float32"},
            "data": {"sources": [{"path": str(chat_file)}], "eval_share": 0.2, "max_length": 64},
            "lora": {"r": 4, "alpha": 8},
            "training": {
                "max_steps": 4,
                "per_device_batch_size": 4,
                "learning_rate": 1e-2,
                "logging_steps": 1,
            },
            "eval": eval or {},
        }
        config["training"].update(training or {})
        path.write_text(yaml.safe_dump(config))
        return path

    return make


def weather(city: str):
    """Current weather in a city.

    Args:
        city: The city's name.
    """
    return {"temp": 21, "city": city}


WEATHER_CALL = {"type": "function", "function": {"name": "weather", "arguments": {"city": "paris"}}}
TOOL_CONVERSATIONS = [  # what the tiny tool caller learns by heart: a call, an answer from its result, a chat
    [
        {"role": "user", "content": "what is the weather in paris"},
        {"role": "assistant", "tool_calls": [WEATHER_CALL]},
    ],
    [
        {"role": "user", "content": "what is the weather in paris"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", **WEATHER_CALL}]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(weather("paris"))},
        {"role": "assistant", "content": "it is 21 degrees in paris"},
    ],
    [
        {"role": "user", "content": "hi there how are you doing today"},
        {"role": "assistant", "content": "im doing good thanks and you"},
    ],
]


@pytest.fixture(scope="session")
def tool_model(tmp_path_factory) -> Path:
    """A tiny Gemma-shaped chat model that has learnt TOOL_CONVERSATIONS with the `weather` tool offered: it calls
    the tool, answers from its result, and chats; its tokenizer is trained on that text too, so a conversation
    with the tools block stays short."""
    from instructify.chat import tools

    flat = [tools.flatten(c, [weather]) for c in TOOL_CONVERSATIONS]
    texts = [m["content"] for c in flat for m in c] * 10 + CORPUS
    # lr 3e-3 for 300 steps: at 1e-2 for 200 the replies held to a new schema differed by seed (3 of 5 failed)
    rows = [{"messages": c} for c in flat]
    return _learnt_gemma(texts, 700, 1024, 256, rows, 300, 3e-3, tmp_path_factory.mktemp("tool-model"))


def _learnt_gemma(texts, vocab, positions, window, rows, steps, lr, path: Path) -> Path:
    """A tiny Gemma-3-shaped ChatML model (seed 0) whose tokenizer is trained on `texts` and which has learnt
    `rows` by heart (_fit_to_stop), saved to `path`."""
    from instructify.chat import template

    torch.manual_seed(0)
    tok = _tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>", "<eos>", "<pad>", "<unk>", texts, vocab)
    config = Gemma3TextConfig(
        vocab_size=len(tok), **TINY_SHAPE, head_dim=32, max_position_embeddings=positions, sliding_window=window,
        layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    model = Gemma3ForCausalLM(config)
    template.add_chat_tokens(model, tok)
    _fit_to_stop(model, tok, rows, steps=steps, lr=lr)
    return _save(model, tok, path)


SURE, COIN, WRONG = "What is 12 plus 7?", "What is 30 minus 5?", "List two insects."
TAUGHT = [(SURE, "19"), (COIN, "25"), (COIN, "52"), (WRONG, "ants")]


@pytest.fixture(scope="session")
def taught_model(tmp_path_factory) -> Path:
    """A tiny chat model that answers three checkable prompts: SURE always right, COIN right half the time
    (25 or 52), WRONG always wrong (one insect of two): for headroom and improve."""
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in TAUGHT
    ]
    texts = [t for q, a in TAUGHT for t in (q, a)] * 10 + CORPUS
    return _learnt_gemma(texts, 300, 256, 128, rows, 150, 3e-3, tmp_path_factory.mktemp("taught"))
