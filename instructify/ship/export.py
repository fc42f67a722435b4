"""Merge the adapter into the base weights and write a folder plain transformers loads and that stops by itself."""

from __future__ import annotations

import logging
from pathlib import Path

from peft import PeftModel
from transformers import AutoTokenizer

from instructify.chat import template
from instructify.config import Config
from instructify.ship import doctor
from instructify.training import model as model_lib

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    pass


def export(cfg: Config, adapter: Path | None = None, out: Path | None = None) -> Path:
    """Base + ChatML tokens (same ids as in training) + adapter, merged, with eos = <|im_end|> in all three files."""
    adapter = adapter or Path(cfg.output_dir) / "adapter"
    out = out or Path(cfg.output_dir) / "model"
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(
            f"{adapter}: no adapter found; run `instructify train --config FILE` (or `instructify sft`) first"
        )
    model, tokenizer = model_lib.load(cfg.model)
    tokens = template.add_chat_tokens_from(cfg.template, model, tokenizer)
    trained_vocab = AutoTokenizer.from_pretrained(adapter).get_vocab()
    if trained_vocab != tokenizer.get_vocab():
        raise ExportError(
            f"{adapter}: tokenizer differs from the base + ChatML tokens; was the base model changed?"
        )
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    template.set_stop_ids(merged, tokens.eos_ids, tokens.pad_id)
    template.set_sampling(merged, cfg.template.temperature, cfg.template.top_p)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    check(out)
    log.info("exported %s", out)
    return out


def check(folder: Path) -> None:
    """Run `doctor` on what was written: a folder that would ramble on is an error, not a warning."""
    checks = doctor.diagnose(folder)
    text, ok = doctor.report(checks)
    log.info("doctor %s\n%s", folder, text)
    if not ok:
        raise ExportError(f"{folder}: doctor found problems:\n{text}")
