"""Merge the adapter into the base weights and write a folder plain transformers loads and that stops by itself."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from peft import PeftModel
from transformers import AutoTokenizer, GenerationConfig

from train import template
from train import model as model_lib
from train.config import Config

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    pass


def export(cfg: Config, adapter: Path | None = None, out: Path | None = None) -> Path:
    """Base + ChatML tokens (same ids as in training) + adapter, merged, with eos = <|im_end|> in all three files."""
    adapter = adapter or Path(cfg.output_dir) / "adapter"
    out = out or Path(cfg.output_dir) / "model"
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"{adapter}: no adapter found; run `make train` (or `python -m train sft`) first")
    model, tokenizer = model_lib.load(cfg.model)
    tokens = template.add_chat_tokens(model, tokenizer, cfg.template.system_prompt)
    trained_vocab = AutoTokenizer.from_pretrained(adapter).get_vocab()
    if trained_vocab != tokenizer.get_vocab():
        raise ExportError(f"{adapter}: tokenizer differs from the base + ChatML tokens; was the base model changed?")
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    template.set_stop_ids(merged, tokens.eos_ids, tokens.pad_id)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    check(out)
    log.info("exported %s", out)
    return out


def check(folder: Path) -> None:
    """What a user's runtime reads: tokenizer eos, config eos and generation_config eos agree on <|im_end|>."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    generation = GenerationConfig.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    im_end = tokenizer.convert_tokens_to_ids(template.IM_END)
    stops = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    problems = []
    if tokenizer.eos_token != template.IM_END:
        problems.append(f"tokenizer eos is {tokenizer.eos_token!r}, expected {template.IM_END}")
    if config.get("eos_token_id") != im_end:
        problems.append(f"config.json eos_token_id is {config.get('eos_token_id')}, expected {im_end}")
    if im_end not in stops:
        problems.append(f"generation_config eos_token_id {stops} lacks {template.IM_END} ({im_end})")
    if tokenizer.pad_token_id in stops:
        problems.append("pad token is an eos id")
    if not tokenizer.chat_template or "<|im_start|>" not in tokenizer.chat_template:
        problems.append("tokenizer has no ChatML chat_template")
    if problems:
        raise ExportError(f"{folder}: " + "; ".join(problems))
