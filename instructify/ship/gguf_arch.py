"""What each architecture needs in a GGUF beyond its tensors' names (those come from the `gguf` package's tables):
the checks that it is expressible, its metadata keys and the layout llama.cpp expects, following llama.cpp's
convert_hf_to_gguf.py for each (a script that is not on PyPI, hence this table).

llama.cpp rotates Llama-style models (llama, mistral, granite) with interleaved rotary halves, so their q/k rows
are permuted; NeoX-style ones (qwen2, qwen3, phi3, olmo2, gemma) keep transformers' order. Gemma stores its norms
as w where llama.cpp scales by 1 + w.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gguf
import numpy as np
import torch


@dataclass(frozen=True)
class Arch:
    arch: gguf.MODEL_ARCH
    permute_qk: bool = False  # llama.cpp's rotary order (Llama-style rope)
    norm_plus_one: bool = False  # Gemma: RMSNorm scales by 1 + w
    problems: Callable[[dict], list[str]] = lambda config: []
    metadata: Callable[[gguf.GGUFWriter, dict], None] = lambda w, config: None
    extra_tensors: Callable[[dict], Iterator[tuple[str, np.ndarray]]] = lambda config: iter(())


GEMMA3_SWA_PATTERN = (
    6  # llama.cpp and transformers' GGUF loader both assume every 6th Gemma 3 layer is global
)
GEMMA3_LOCAL_ROPE = 10_000.0  # and this rope base on the sliding layers


def rope(config: dict) -> dict:
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return params.get("full_attention", params) if config.get("model_type") == "gemma3_text" else params


def head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _default_rope(config: dict, allowed: tuple[str, ...] = ("default",)) -> list[str]:
    kind = rope(config).get("rope_type", rope(config).get("type", "default"))
    return [] if kind in allowed else [f"rope scaling {rope(config)}"]


def _no_bias(config: dict) -> list[str]:
    return ["attention or MLP biases"] if config.get("attention_bias") or config.get("mlp_bias") else []


def _silu(config: dict) -> list[str]:
    act = config.get("hidden_act", "silu")
    return [] if act == "silu" else [f"hidden_act {act}"]


def _llama_problems(config: dict) -> list[str]:
    return _no_bias(config) + _silu(config) + _default_rope(config, ("default", "llama3"))


def _llama_metadata(w: gguf.GGUFWriter, config: dict) -> None:
    w.add_vocab_size(config["vocab_size"])
    w.add_rope_dimension_count(head_dim(config))


def _llama3_rope_freqs(config: dict) -> Iterator[tuple[str, np.ndarray]]:
    """Llama 3.1+'s frequency-dependent rope scaling as llama.cpp reads it: a rope_freqs tensor of per-dimension
    factors, computed as convert_hf_to_gguf.py (and transformers' _compute_llama3_parameters) do."""
    params = rope(config)
    if params.get("rope_type") != "llama3":
        return
    base, dim = float(params.get("rope_theta", config.get("rope_theta", 10_000.0))), head_dim(config)
    factor, low, high = (
        params.get("factor", 8.0),
        params.get("low_freq_factor", 1.0),
        params.get("high_freq_factor", 4.0),
    )
    old = params.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)):
        wavelen = 2 * math.pi / float(freq)
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", np.array(factors, dtype=np.float32)


def _granite_metadata(w: gguf.GGUFWriter, config: dict) -> None:
    """Granite's muP multipliers, which llama.cpp's granite graph applies where transformers does."""
    _llama_metadata(w, config)
    w.add_embedding_scale(config.get("embedding_multiplier", 1.0))
    w.add_residual_scale(config.get("residual_multiplier", 1.0))
    w.add_attention_scale(config.get("attention_multiplier", 1.0 / math.sqrt(head_dim(config))))
    w.add_logit_scale(config.get("logits_scaling", 1.0))


def _qwen_problems(config: dict) -> list[str]:
    problems = _silu(config) + _default_rope(config)
    if config.get("use_sliding_window"):
        problems.append("use_sliding_window (llama.cpp's qwen2 graph attends to the whole context)")
    return problems


def _phi3_problems(config: dict) -> list[str]:
    return _silu(config) + _default_rope(config, ("default", "longrope"))


def _phi3_metadata(w: gguf.GGUFWriter, config: dict) -> None:
    w.add_rope_dimension_count(int(head_dim(config) * config.get("partial_rotary_factor", 1.0)))
    original = config.get("original_max_position_embeddings") or config["max_position_embeddings"]
    w.add_rope_scaling_orig_ctx_len(original)
    if config.get("sliding_window"):
        w.add_sliding_window(config["sliding_window"])
    if rope(config).get("rope_type", rope(config).get("type")) == "longrope":
        scale = config["max_position_embeddings"] / original
        attn = rope(config).get("attention_factor") or (
            1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(original))
        )
        w.add_rope_scaling_attn_factors(attn)


def _phi3_longrope(config: dict) -> Iterator[tuple[str, np.ndarray]]:
    params = rope(config)
    if params.get("rope_type", params.get("type")) != "longrope":
        return
    for key, tensor in (
        ("long_factor", gguf.MODEL_TENSOR.ROPE_FACTORS_LONG),
        ("short_factor", gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT),
    ):
        yield gguf.TENSOR_NAMES[tensor] + ".weight", np.array(params[key], dtype=np.float32)


def _gemma3_problems(config: dict) -> list[str]:
    problems = []
    n = config["num_hidden_layers"]
    expected = [
        "full_attention" if (i + 1) % GEMMA3_SWA_PATTERN == 0 else "sliding_attention" for i in range(n)
    ]
    if config.get("layer_types", expected) != expected:
        problems.append(f"layer_types {config['layer_types']} (GGUF assumes every 6th layer global)")
    if config.get("query_pre_attn_scalar", config["head_dim"]) != config["head_dim"]:
        problems.append("query_pre_attn_scalar != head_dim")
    local = (config.get("rope_parameters") or {}).get("sliding_attention", {})
    if local.get("rope_theta", GEMMA3_LOCAL_ROPE) != GEMMA3_LOCAL_ROPE or local.get("rope_type") not in (
        None,
        "default",
    ):
        problems.append(f"sliding-layer rope {local}")
    if config.get("attn_logit_softcapping") is not None:
        problems.append("attn_logit_softcapping")
    return problems + _default_rope(config)


def _gemma3_metadata(w: gguf.GGUFWriter, config: dict) -> None:
    w.add_sliding_window(config["sliding_window"])
    if config.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(config["final_logit_softcapping"])


def _gemma2_problems(config: dict) -> list[str]:
    problems = []
    n = config["num_hidden_layers"]
    expected = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
    if config.get("layer_types", expected) != expected:
        problems.append(f"layer_types {config['layer_types']} (llama.cpp's gemma2 alternates, sliding first)")
    if config.get("query_pre_attn_scalar", config["head_dim"]) != config["head_dim"]:
        problems.append("query_pre_attn_scalar != head_dim")
    return problems + _default_rope(config)


def _gemma2_metadata(w: gguf.GGUFWriter, config: dict) -> None:
    w.add_sliding_window(config["sliding_window"])
    if config.get("attn_logit_softcapping"):
        w.add_attn_logit_softcapping(config["attn_logit_softcapping"])
    if config.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(config["final_logit_softcapping"])


ARCHITECTURES = {
    "llama": Arch(gguf.MODEL_ARCH.LLAMA, True, False, _llama_problems, _llama_metadata, _llama3_rope_freqs),
    # llama.cpp runs Mistral as llama (its converter does the same)
    "mistral": Arch(gguf.MODEL_ARCH.LLAMA, True, False, _llama_problems, _llama_metadata),
    "granite": Arch(gguf.MODEL_ARCH.GRANITE, True, False, _llama_problems, _granite_metadata),
    "qwen2": Arch(gguf.MODEL_ARCH.QWEN2, problems=_qwen_problems),
    "qwen3": Arch(gguf.MODEL_ARCH.QWEN3, problems=_qwen_problems),
    "phi3": Arch(
        gguf.MODEL_ARCH.PHI3, problems=_phi3_problems, metadata=_phi3_metadata, extra_tensors=_phi3_longrope
    ),
    "olmo2": Arch(gguf.MODEL_ARCH.OLMO2, problems=lambda c: _silu(c) + _default_rope(c)),
    "gemma2": Arch(gguf.MODEL_ARCH.GEMMA2, False, True, _gemma2_problems, _gemma2_metadata),
    "gemma3_text": Arch(gguf.MODEL_ARCH.GEMMA3, False, True, _gemma3_problems, _gemma3_metadata),
}


def rotary_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """transformers keeps each head's rotary halves apart, llama.cpp interleaves them (its converter's permute)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def layout(spec: Arch, config: dict, key: str, w: torch.Tensor) -> torch.Tensor:
    """Tensor `key` as llama.cpp reads it for this architecture."""
    if spec.norm_plus_one and key.endswith("norm.weight"):
        return w + 1
    if spec.permute_qk and key.endswith("q_proj.weight"):
        return rotary_rows(w, config["num_attention_heads"])
    if spec.permute_qk and key.endswith("k_proj.weight"):
        return rotary_rows(w, config["num_key_value_heads"])
    return w
