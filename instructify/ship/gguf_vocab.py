"""The vocabulary of a model folder in llama.cpp's terms: tokens, scores, types, merges, the pre-tokenizer's name
and whether a '▁' goes before text, read from `tokenizer.json`.

Our own because the `gguf` package has no reader of tokenizer.json (llama.cpp's convert_hf_to_gguf.py names a
pre-tokenizer by hashing what a Hub checkpoint's tokenizer makes of a test text; we name it from the split pattern
itself, which also covers tokenizers trained anew).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import gguf

from instructify.ship.export import ExportError

# llama.cpp's pre-tokenizer for each split pattern the byte-level families ship in tokenizer.json.
SPLIT_PATTERNS = {
    # Llama 3 ("llama-bpe"); OLMo 2 and SmolLM3 ship the same pattern (llama.cpp's "dbrx" splits alike)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+": "llama-bpe",
    # Qwen2, Qwen2.5, Qwen3: one digit per token
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+": "qwen2",
}


class GGUFError(ExportError):
    pass


@dataclass(frozen=True)
class Vocab:
    model: str  # tokenizer.ggml.model: "llama" (sentencepiece-style BPE with byte fallback) or "gpt2" (byte-level)
    pre: str  # tokenizer.ggml.pre: how llama.cpp splits text before BPE
    tokens: list[str]
    scores: list[float]
    types: list[int]
    merges: list[str]
    space_prefix: bool  # '▁' before the text after each control token (old Llama 2 tokenizer.json), or never


def _steps(spec: dict | None, key: str) -> list[dict]:
    if not spec:
        return []
    return [s for sub in spec.get(key, []) for s in _steps(sub, key)] if key in spec else [spec]


def byte_level_name(pre: dict | None) -> str | None:
    """llama.cpp's name for a byte-level pre-tokenizer, from tokenizer.json; None when it has no name for it."""
    steps = _steps(pre, "pretokenizers")
    kinds = [s.get("type") for s in steps]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if not byte_level or byte_level[-1].get("add_prefix_space"):
        return None
    if byte_level[-1].get("use_regex", True):
        if kinds == ["ByteLevel"]:
            return "gpt-2"
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
            return "smollm"  # SmolLM/SmolLM2: one digit per token, then GPT-2's split
        return None
    if (
        kinds == ["Split", "ByteLevel"]
        and steps[0].get("behavior") == "Isolated"
        and not steps[0].get("invert")
    ):
        return SPLIT_PATTERNS.get(steps[0].get("pattern", {}).get("Regex"))
    return None


def space_prefix(spec: dict) -> bool:
    """Whether text after a control token starts with '▁', as llama.cpp's add_space_prefix means it: the old Llama 2
    tokenizer.json prepends it in its normalizer to every piece. Metaspace "first" (transformers 5's Llama 2,
    Mistral, Phi-3) puts it only at a text's very start, which a chat prompt (BOS or <|im_start|> first) never
    has; Gemma never."""
    prepends = any(n.get("type") == "Prepend" for n in _steps(spec.get("normalizer"), "normalizers"))
    metaspace = [
        s for s in _steps(spec.get("pre_tokenizer"), "pretokenizers") if s.get("type") == "Metaspace"
    ]
    return prepends or any(m.get("prepend_scheme", "always") == "always" for m in metaspace)


def _name(spec: dict, folder: Path, spm_like: bool) -> str:
    pre = "default" if spm_like else byte_level_name(spec.get("pre_tokenizer"))
    if pre is None:
        raise GGUFError(
            f"{folder}/tokenizer.json: pre-tokenizer {json.dumps(spec.get('pre_tokenizer'))[:120]} has no "
            "llama.cpp name here; convert this model with llama.cpp's convert_hf_to_gguf.py"
        )
    return pre


def read_vocab(folder: Path, rows: int) -> Vocab:
    """Tokens, scores, types and merges in llama.cpp's terms, padded with unused tokens to the embedding rows."""
    spec = json.loads((folder / "tokenizer.json").read_text())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise GGUFError(
            f"{folder}/tokenizer.json: a {model.get('type')} tokenizer; GGUF export handles BPE only"
        )
    spm_like = bool(model.get("byte_fallback"))  # '▁' for spaces, <0xNN> byte tokens: Gemma, Llama 2, Mistral
    pre = _name(spec, folder, spm_like)
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= rows:
        raise GGUFError(
            f"{folder}: the tokenizer has {max(by_id) + 1} tokens, the embedding only {rows} rows"
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    # llama.cpp's sentencepiece tokenizer merges the adjacent pair whose result scores highest: a merge's rank,
    # negated, reproduces the BPE merge order. Tokens no merge produces are never formed by a merge.
    rank: dict[str, int] = {}
    for r, m in enumerate(merges):
        rank.setdefault(m.replace(" ", ""), r)
    tokens, scores, types = [], [], []
    for i in range(rows):
        t = by_id.get(i)
        if t is None:  # padding rows of an embedding resized to a multiple of 64
            tokens.append(f"[PAD{i}]")
            scores.append(-1e9)
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(t)
        scores.append(-float(rank[t]) - 1 if t in rank else -1e9)
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif spm_like and re.fullmatch(r"<0x[0-9A-F]{2}>", t):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    model_name = "llama" if spm_like else "gpt2"
    return Vocab(
        model_name, pre, tokens, scores, [int(t) for t in types], merges, spm_like and space_prefix(spec)
    )
