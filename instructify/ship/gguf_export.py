"""Write an exported model folder as one GGUF file (llama.cpp, Ollama, LM Studio) and an Ollama Modelfile.

Built on the `gguf` package's `GGUFWriter`, tensor-name tables and quantizers. Our own code is only what it lacks
without llama.cpp's `convert_hf_to_gguf.py` (a 10k-line script that is not on PyPI): the per-architecture
metadata and weight layout for the two families we train (Gemma 3: norms stored as 1 + w; Llama/SmolLM2: q/k rows
in llama.cpp's rotary order), and the vocabulary read from `tokenizer.json`, where the added tokens become control
tokens, eos is the turn terminator `<|im_end|>` (also eot) and the chat template is the run's ChatML.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors import safe_open
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from instructify.chat import template
from instructify.ship import doctor
from instructify.ship.export import ExportError

log = logging.getLogger(__name__)

# dtype of the 2-D weights; norms and other 1-D tensors stay float32, as llama.cpp's own converter writes them.
DTYPES = {
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
ARCHITECTURES = {"gemma3_text": gguf.MODEL_ARCH.GEMMA3, "llama": gguf.MODEL_ARCH.LLAMA}
GEMMA3_SWA_PATTERN = (
    6  # llama.cpp and transformers' GGUF loader both assume every 6th Gemma 3 layer is global
)
GEMMA3_LOCAL_ROPE = 10_000.0  # and this rope base on the sliding layers


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


def gguf_path(folder: Path, dtype: str) -> Path:
    """`runs/<name>/<name>-<dtype>.gguf` beside `model/`, or `<folder>-<dtype>.gguf` for another folder."""
    name = folder.parent.name if folder.name == "model" else folder.name
    return folder.parent / f"{name}-{dtype}.gguf"


def _pre_tokenizer(pre: dict | None) -> str | None:
    """llama.cpp's name for a byte-level pre-tokenizer, from tokenizer.json; None when it has no name for it."""
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    kinds = [s.get("type") for s in steps]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if not byte_level or not byte_level[-1].get("use_regex", True) or byte_level[-1].get("add_prefix_space"):
        return None
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"  # SmolLM/SmolLM2: one digit per token, then GPT-2's split
    return None


def read_vocab(folder: Path, tok: PreTrainedTokenizerBase, rows: int) -> Vocab:
    """Tokens, scores, types and merges in llama.cpp's terms, padded with unused tokens to the embedding rows."""
    spec = json.loads((folder / "tokenizer.json").read_text())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise GGUFError(
            f"{folder}/tokenizer.json: a {model.get('type')} tokenizer; GGUF export handles BPE only"
        )
    spm_like = bool(model.get("byte_fallback"))  # Gemma: pieces with '▁' for spaces, <0xNN> byte tokens
    pre = "default" if spm_like else _pre_tokenizer(spec.get("pre_tokenizer"))
    if pre is None:
        raise GGUFError(
            f"{folder}/tokenizer.json: pre-tokenizer {json.dumps(spec.get('pre_tokenizer'))[:120]} has no "
            "llama.cpp name here; convert this model with llama.cpp's convert_hf_to_gguf.py"
        )
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
    return Vocab("llama" if spm_like else "gpt2", pre, tokens, scores, [int(t) for t in types], merges)


def inference_template(tok: PreTrainedTokenizerBase) -> str:
    """The chat template without `{% generation %}` markers (a transformers extension that llama.cpp's and
    jinja2's parsers reject), checked to render exactly as the saved one."""
    plain = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", tok.chat_template)
    for a, b, gen in ((0, 7, False), (1, 4, True), (1, 2, True)):
        conv = template.PROBE[a:b]
        same = tok.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=gen, chat_template=plain
        ) == tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        if not same:
            raise GGUFError("the chat template renders differently without its {% generation %} markers")
    return plain


def _check_architecture(config: dict) -> gguf.MODEL_ARCH:
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise GGUFError(
            f"config.json: model_type {kind!r}; GGUF export knows {', '.join(ARCHITECTURES)} (Gemma 3 and "
            "Llama/SmolLM2); for other models use llama.cpp's convert_hf_to_gguf.py on the folder"
        )
    problems = []
    if kind == "gemma3_text":
        n = config["num_hidden_layers"]
        expected = [
            "full_attention" if (i + 1) % GEMMA3_SWA_PATTERN == 0 else "sliding_attention" for i in range(n)
        ]
        if config.get("layer_types", expected) != expected:
            problems.append(f"layer_types {config['layer_types']} (GGUF assumes every 6th layer global)")
        if config.get("query_pre_attn_scalar", config["head_dim"]) != config["head_dim"]:
            problems.append("query_pre_attn_scalar != head_dim")
        local = config.get("rope_parameters", {}).get("sliding_attention", {})
        if local.get("rope_theta", GEMMA3_LOCAL_ROPE) != GEMMA3_LOCAL_ROPE or local.get("rope_type") not in (
            None,
            "default",
        ):
            problems.append(f"sliding-layer rope {local}")
        if config.get("attn_logit_softcapping") is not None:
            problems.append("attn_logit_softcapping")
    else:
        if config.get("attention_bias") or config.get("mlp_bias"):
            problems.append("attention or MLP biases")
        if config.get("hidden_act", "silu") != "silu":
            problems.append(f"hidden_act {config['hidden_act']}")
    rope = _rope(config)
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope scaling {rope}")
    if problems:
        raise GGUFError(f"config.json: {kind} with {'; '.join(problems)}: not expressible in GGUF here")
    return ARCHITECTURES[kind]


def _rope(config: dict) -> dict:
    rope = config.get("rope_parameters") or {}
    return rope.get("full_attention", rope) if config.get("model_type") == "gemma3_text" else rope


def _write_metadata(w: gguf.GGUFWriter, config: dict, name: str, file_type: int) -> None:
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(float(_rope(config).get("rope_theta", config.get("rope_theta", 10_000.0))))
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    if config["model_type"] == "gemma3_text":
        w.add_sliding_window(config["sliding_window"])
        if config.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(config["final_logit_softcapping"])
    else:
        w.add_vocab_size(config["vocab_size"])
        w.add_rope_dimension_count(head_dim)


def _write_tokenizer(
    w: gguf.GGUFWriter, vocab: Vocab, tok: PreTrainedTokenizerBase, chat_template: str
) -> None:
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    im_end = tok.convert_tokens_to_ids(template.IM_END)
    w.add_eos_token_id(im_end)  # what llama.cpp, Ollama and LM Studio stop on
    w.add_eot_token_id(im_end)
    if tok.bos_token_id is not None:
        w.add_bos_token_id(tok.bos_token_id)
    w.add_add_bos_token(template.adds_bos(tok))  # Gemma: one <bos>, which the template writes; SmolLM2: none
    w.add_add_eos_token(False)
    if vocab.model == "llama":
        w.add_add_space_prefix(False)
    if tok.unk_token_id is not None:
        w.add_unk_token_id(tok.unk_token_id)
    if tok.pad_token_id is not None:
        w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(chat_template)


def _llama_rotary_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """transformers keeps each head's rotary halves apart, llama.cpp interleaves them (its converter's permute)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _tensors(folder: Path, config: dict, arch: gguf.MODEL_ARCH):
    """(GGUF name, float32 numpy array) for every weight, in llama.cpp's layout."""
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GGUFError(f"{folder}: no *.safetensors weights")
    for f in files:
        with safe_open(str(f), "pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a dict
                if key == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # llama.cpp reuses token_embd when there is no output tensor
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise GGUFError(f"{f.name}: tensor {key} has no GGUF name for {arch.name.lower()}")
                w = st.get_tensor(key).float()
                if arch == gguf.MODEL_ARCH.GEMMA3 and key.endswith("norm.weight"):
                    w = w + 1  # Gemma3RMSNorm scales by (1 + w); llama.cpp by w
                elif arch == gguf.MODEL_ARCH.LLAMA and key.endswith("q_proj.weight"):
                    w = _llama_rotary_rows(w, config["num_attention_heads"])
                elif arch == gguf.MODEL_ARCH.LLAMA and key.endswith("k_proj.weight"):
                    w = _llama_rotary_rows(w, config["num_key_value_heads"])
                yield name, w.numpy()


def _encode(
    data: np.ndarray, qtype: gguf.GGMLQuantizationType
) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    if data.ndim == 1:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
        qtype = gguf.GGMLQuantizationType.F16  # q8_0 blocks are 32 wide; llama.cpp's converter falls back too
    return gguf.quants.quantize(data, qtype), qtype


def write_gguf(folder: Path, dtype: str = "bf16", out: Path | None = None) -> Path:
    """`folder` (a model folder doctor accepts) as one GGUF file; written under a temporary name, then renamed."""
    folder = Path(folder)
    if dtype not in DTYPES:
        raise GGUFError(f"unknown GGUF dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if not (folder / "config.json").is_file():
        raise GGUFError(f"{folder}: no model folder (config.json missing); run `make train` first")
    text, ok = doctor.report(doctor.diagnose(folder))
    if not ok:
        raise GGUFError(f"{folder}: doctor found problems; not writing a GGUF that would not stop:\n{text}")
    config = json.loads((folder / "config.json").read_text())
    config = config.get("text_config", config)
    arch = _check_architecture(config)
    tok = AutoTokenizer.from_pretrained(folder)
    vocab = read_vocab(folder, tok, config["vocab_size"])
    chat_template = inference_template(tok)
    qtype, file_type = DTYPES[dtype]
    out = Path(out) if out else gguf_path(folder, dtype)

    t0 = time.time()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        _write_metadata(w, config, out.stem, file_type)
        _write_tokenizer(w, vocab, tok, chat_template)
        for name, data in _tensors(folder, config, arch):
            data, raw = _encode(data, qtype)
            w.add_tensor(name, data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's 0600 would keep the file from other users' engines
        os.replace(tmp, out)  # atomic: a GGUF under its final name is always complete
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("wrote %s (%s, %.0f MB) in %.1f s", out, dtype, out.stat().st_size / 1e6, time.time() - t0)
    return out


def modelfile(gguf_file: Path, tok: PreTrainedTokenizerBase, generation: dict | None = None) -> str:
    """An Ollama Modelfile: our ChatML in Go template syntax (Ollama's llama.cpp runner adds the BOS the GGUF
    asks for, so the template has none), stop at <|im_end|>, the decoding default of generation_config.json
    (Ollama would otherwise sample at its own temperature), and the run's default system prompt, if any."""
    lines = [
        f"FROM ./{gguf_file.name}",
        'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
        '<|im_start|>assistant\n"""',
        f'PARAMETER stop "{template.IM_END}"',
    ]
    if generation is not None:
        sampled = generation.get("do_sample") and generation.get("temperature")
        lines.append(f"PARAMETER temperature {generation['temperature'] if sampled else 0}")
        if sampled and generation.get("top_p"):
            lines.append(f"PARAMETER top_p {generation['top_p']}")
    system = template.default_system(tok, tok.chat_template)
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def export_gguf(folder: Path, dtype: str) -> tuple[Path, Path]:
    """The GGUF beside `folder` and an Ollama `Modelfile` naming it."""
    path = write_gguf(folder, dtype)
    mf = path.parent / "Modelfile"
    gen_path = Path(folder) / "generation_config.json"
    generation = json.loads(gen_path.read_text()) if gen_path.is_file() else None
    mf.write_text(modelfile(path, AutoTokenizer.from_pretrained(folder), generation))
    log.info("wrote %s: ollama create %s -f %s", mf, path.parent.name, mf)
    return path, mf
