"""Refuse a base instructify cannot train, before any weights load or anything is written: one message naming
the model type, what is missing and what to use instead. Reads config.json only (a Hub id downloads just that)."""

from __future__ import annotations

import json
from pathlib import Path

from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from instructify.config import ModelConfig

# Recurrent or hybrid (linear attention / state-space) caches: our evaluation, monitor and serving engine batch
# rows over a plain key/value cache (left padding, per-row lengths), which these models do not have.
RECURRENT = {
    "qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "granitemoehybrid", "lfm2", "lfm2_moe", "mamba",
    "mamba2", "jamba", "falcon_h1", "falcon_mamba", "zamba", "zamba2", "bamba", "nemotron_h", "rwkv",
    "recurrent_gemma", "xlstm", "minimax", "kimi_linear",
}  # fmt: skip
ATTENTION_LAYERS = {"full_attention", "sliding_attention"}
TEXT_INSTEAD = {  # multimodal checkpoints whose family has text-only ones
    "gemma3": "google/gemma-3-270m or google/gemma-3-1b-pt (text-only Gemma 3)",
    "gemma3n": "google/gemma-3-1b-pt (text-only Gemma 3)",
    "mllama": "meta-llama/Llama-3.2-1B or -3B (text-only Llama 3.2)",
}


class UnsupportedModel(ValueError):
    """A base this pipeline cannot train; the message says what to use instead."""


def read_config(cfg: ModelConfig, source: str) -> dict | None:
    """config.json of a folder or Hub id (only that file is fetched); None when there is none to read."""
    path = Path(source) / "config.json"
    if not path.is_file():
        from transformers.utils import cached_file

        try:
            found = cached_file(
                source, "config.json", revision=cfg.revision, _raise_exceptions_for_missing_entries=False
            )
        except OSError:  # offline, no such repository: the loader's own message says so
            return None
        if found is None:
            return None
        path = Path(found)
    return json.loads(path.read_text())


def problem(config: dict, trust_remote_code: bool) -> str | None:
    """Why a model with this config.json cannot be trained here, or None."""
    kind = config.get("model_type")
    if kind not in CONFIG_MAPPING_NAMES:
        if config.get("auto_map"):
            if trust_remote_code:
                return None
            return (
                f"model_type {kind!r} is code from the model's repository (auto_map in config.json), not in "
                "transformers; read that code, then set model.trust_remote_code: true, or pick a base transformers "
                "ships (Llama, Qwen, Mistral, Gemma, Phi, OLMo, Granite, SmolLM)"
            )
        return f"model_type {kind!r} is unknown to this transformers; pick a base it ships, or upgrade instructify"
    text = config.get("text_config") or config
    layers = set(text.get("layer_types") or ()) - ATTENTION_LAYERS
    if kind in RECURRENT or text.get("model_type") in RECURRENT or layers:
        what = (
            f"layers of kind {', '.join(sorted(layers))}" if layers else "a recurrent or hybrid state cache"
        )
        return (
            f"model_type {kind!r} has {what}; instructify's evaluation and serving batch over a plain key/value "
            "cache: pick an attention-only base (Qwen3, Granite 3.3, Llama 3.2, SmolLM3)"
        )
    if "vision_config" in config or kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        instead = TEXT_INSTEAD.get(kind, "a text-only causal language model")
        return (
            f"model_type {kind!r} ({', '.join(config.get('architectures') or ['no architectures'])}) is a "
            f"vision-language or non-generative model; instructify trains text-only causal LMs: use {instead}"
        )
    return None


def check(cfg: ModelConfig, source: str) -> None:
    """Raise UnsupportedModel naming `cfg.name` when its config says it cannot be trained here."""
    config = read_config(cfg, source)
    if config is not None and (why := problem(config, cfg.trust_remote_code)):
        raise UnsupportedModel(f"model.name={cfg.name}: {why}")
