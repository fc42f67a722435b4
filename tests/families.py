"""Tiny bases of every family we support, built offline from each family's own transformers config class, with a
tokenizer of the family's kind trained in-process: byte-level BPE with the family's own split pattern (Llama 3,
Qwen, OLMo 2, Granite, SmolLM3), a SentencePiece model trained with the `sentencepiece` package (Mistral,
Llama 2/TinyLlama, Phi-3.5) or Gemma's '▁'-BPE with byte fallback (Gemma 2); the family's real special tokens,
BOS behaviour and tie setting. `build(name, folder)` writes one; tests/test_families.py runs every stage on each."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sentencepiece
import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import GemmaTokenizer, LlamaTokenizer, PreTrainedTokenizerFast

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

# The families' own pre-tokenizer split patterns (from their tokenizer.json), as llama.cpp names them.
LLAMA3_SPLIT = (  # Llama 3 ("llama-bpe"); OLMo 2 and SmolLM3 use the same
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (  # Qwen2/2.5/3 ("qwen2"): one digit per token
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

DIGITS = "digits"  # SmolLM2: Digits(individual) then GPT-2's byte-level split

SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
)


def byte_bpe(special: list[str], split: str | None = None, bos: str | None = None, **roles):
    """Byte-level BPE: GPT-2's split (split=None) or a family's regex then byte-level without its own regex, as
    Llama 3's and Qwen's tokenizer.json have it; `bos` is added in front of every text when given."""
    tok = Tokenizer(models.BPE())
    if split is None or split == DIGITS:
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
        first = [pre_tokenizers.Digits(individual_digits=True)] if split == DIGITS else []
    else:
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        first = [pre_tokenizers.Split(Regex(split), "isolated")]
    tok.pre_tokenizer = pre_tokenizers.Sequence([*first, byte_level]) if first else byte_level
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=special, initial_alphabet=alphabet)
    )
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, **roles)


def spm(legacy: bool, add_bos: bool = True, extra: list[str] = (), eos: str = "</s>"):
    """A SentencePiece BPE model (byte fallback, <unk> <s> </s>) trained here and loaded as transformers'
    LlamaTokenizer does a `tokenizer.model` (Metaspace, '▁' on a text's first word only); `legacy`: the older
    tokenizer.json whose normalizer prepends '▁' to every segment, after each special token too."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        split_digits=True,
        minloglevel=2,
    )
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "tokenizer.model").write_bytes(model.getvalue())
        tok = LlamaTokenizer.from_pretrained(d, legacy=legacy)
    if extra or eos != "</s>":
        tok.add_special_tokens({"extra_special_tokens": [*extra, *([eos] if eos != "</s>" else [])]})
        tok.eos_token = eos
    tok.add_bos_token = add_bos
    if legacy:  # Llama 2/TinyLlama's tokenizer.json: '▁' prepended by the normalizer, to every text segment
        tok.backend_tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
        )
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([])
        # saved as a plain tokenizers file: transformers 5's LlamaTokenizer class would rebuild it as Metaspace
        roles = dict(bos_token=tok.bos_token, eos_token=tok.eos_token, unk_token=tok.unk_token)
        tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, **roles)
    return tok


def gemma_spm() -> GemmaTokenizer:
    """Gemma's kind: '▁'-BPE with <0xNN> byte fallback, no prefix space, <pad> <eos> <bos> <unk> <mask>, BOS."""
    spm_bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    spm_bpe.normalizer = normalizers.Replace(" ", "\u2581")
    spm_bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    spec = json.loads(spm_bpe.to_str())["model"]
    pieces = [p for p, _ in sorted(spec["vocab"].items(), key=lambda x: x[1]) if p != "<unk>"]
    head = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok = GemmaTokenizer(
        vocab={p: i for i, p in enumerate(head + pieces)}, merges=[tuple(m) for m in spec["merges"]]
    )
    tok.add_bos_token = True
    return tok


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str  # transformers' config class, also the model class's prefix
    tokenizer: Callable
    tied: bool
    chatml_present: bool = False  # the base's vocabulary already has <|im_start|>/<|im_end|> (Qwen, SmolLM)
    extra: dict = field(default_factory=dict)  # family-specific config entries (scaling, softcaps, biases)
    model_class: str = ""  # default: the config class's name with ForCausalLM for Config


QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|eot_id|>"]

FAMILIES = {
    f.name: f
    for f in [
        Family(
            "llama3",
            "LlamaConfig",
            lambda: byte_bpe(LLAMA3_SPECIAL, LLAMA3_SPLIT, "<|begin_of_text|>", eos_token="<|end_of_text|>"),
            tied=False,
            extra=dict(rope_parameters={"rope_type": "default", "rope_theta": 500_000.0}),
        ),
        Family("llama2", "LlamaConfig", lambda: spm(legacy=True), tied=False),
        Family(
            "mistral", "MistralConfig", lambda: spm(legacy=False), tied=False, extra=dict(sliding_window=None)
        ),
        Family(
            "qwen2",
            "Qwen2Config",
            lambda: byte_bpe(QWEN_SPECIAL, QWEN2_SPLIT, eos_token="<|endoftext|>", pad_token="<|endoftext|>"),
            tied=False,
            chatml_present=True,
        ),
        Family(
            "qwen3",
            "Qwen3Config",
            lambda: byte_bpe(QWEN_SPECIAL, QWEN2_SPLIT, eos_token="<|endoftext|>", pad_token="<|endoftext|>"),
            tied=True,
            chatml_present=True,
            extra=dict(head_dim=128),  # Qwen3's own: wider than hidden_size / heads
        ),
        Family(
            "phi3",  # Phi-3.5-mini: Llama's SentencePiece with its own end tokens, no BOS added
            "Phi3Config",
            lambda: spm(
                legacy=False,
                add_bos=False,
                extra=["<|end|>", "<|user|>", "<|assistant|>"],
                eos="<|endoftext|>",
            ),
            tied=False,
        ),
        Family(
            "olmo2",
            "Olmo2Config",
            lambda: byte_bpe(
                ["<|endoftext|>", "<|pad|>"], LLAMA3_SPLIT, eos_token="<|endoftext|>", pad_token="<|pad|>"
            ),
            tied=False,
        ),
        Family(
            "granite",  # Granite 3: one <|end_of_text|> for bos, eos, pad and unk; muP multipliers
            "GraniteConfig",
            lambda: byte_bpe(
                ["<|end_of_text|>", "<fim_prefix>"],
                eos_token="<|end_of_text|>",
                pad_token="<|end_of_text|>",
                unk_token="<|end_of_text|>",
            ),
            tied=True,
            extra=dict(
                logits_scaling=8.0,
                embedding_multiplier=12.0,
                residual_multiplier=0.22,
                attention_multiplier=0.0625,
            ),
        ),
        Family(
            "gemma2",
            "Gemma2Config",
            gemma_spm,
            tied=True,
            extra=dict(
                head_dim=256,  # Gemma 2's, which GGUF readers assume for the query scale
                query_pre_attn_scalar=256,
                sliding_window=64,
                final_logit_softcapping=30.0,
                attn_logit_softcapping=50.0,
            ),
        ),
        Family(
            "gemma3",  # the text model; six layers, the sixth global, as llama.cpp and GGUF loaders assume
            "Gemma3TextConfig",
            gemma_spm,
            tied=True,
            extra=dict(num_hidden_layers=6, head_dim=256, query_pre_attn_scalar=256, sliding_window=16),
            model_class="Gemma3ForCausalLM",
        ),
        Family(
            "smollm2",  # SmolLM2's tokenizer: one digit per token, then GPT-2's split; ChatML present, no BOS
            "LlamaConfig",
            lambda: byte_bpe(
                ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], DIGITS, eos_token="<|endoftext|>"
            ),
            tied=True,
            chatml_present=True,
        ),
        Family(
            "smollm3",  # Llama 3's tokenizer with ChatML, tied, every 4th layer without rope
            "SmolLM3Config",
            lambda: byte_bpe(
                ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"],
                LLAMA3_SPLIT,
                eos_token="<|end_of_text|>",
                pad_token="<|end_of_text|>",
            ),
            tied=True,
            chatml_present=True,
        ),
    ]
}


def build(name: str, folder: Path, seed: int = 0) -> Path:
    """The tiny base of family `name` saved in `folder` (model and tokenizer), as a Hub base would be."""
    family = FAMILIES[name]
    torch.manual_seed(seed)
    tok = family.tokenizer()
    config_class = getattr(transformers, family.config_class)
    model_class = getattr(
        transformers, family.model_class or family.config_class.replace("Config", "ForCausalLM")
    )
    pad = tok.pad_token_id
    config = config_class(
        vocab_size=len(tok),
        **{**SHAPE, **{k: v for k, v in family.extra.items() if k in SHAPE}},
        max_position_embeddings=512,
        tie_word_embeddings=family.tied,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=pad,
        **{k: v for k, v in family.extra.items() if k not in SHAPE},
    )
    model = model_class(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
