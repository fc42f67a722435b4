"""Tiny real models and tokenizers, built offline in-process: a Gemma-3-shaped base without ChatML tokens
(tied embeddings, BOS) and a SmolLM2-shaped base that already has `<|im_start|>`/`<|im_end|>` (no BOS)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
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
    special: list[str], bos: str | None, eos: str, pad: str | None, unk: str
) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=unk))
    # Byte-level BPE: every string (newlines included) tokenises and decodes back exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=special, initial_alphabet=alphabet)
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


@pytest.fixture(scope="session")
def gemma_like(tmp_path_factory) -> Path:
    """Gemma-3-shaped base: <bos> added by the tokenizer, eos <eos>, pad <pad>, tied embeddings, no ChatML."""
    torch.manual_seed(0)
    tokenizer = _tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>", "<eos>", "<pad>", "<unk>")
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
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
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
    return _save(LlamaForCausalLM(config), tokenizer, tmp_path_factory.mktemp("smol-like"))


@pytest.fixture
def chat_file(tmp_path) -> Path:
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in conversations()))
    return path
