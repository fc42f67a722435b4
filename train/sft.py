"""config -> base model with ChatML -> data -> SFTTrainer (LoRA + trainable token rows) -> adapter folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from peft import get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed
from trl import SFTConfig, SFTTrainer

from train import data, head, template
from train import model as model_lib
from train.config import Config

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    tokens: template.ChatTokens
    train: list[dict]  # messages, input_ids, assistant_masks: exactly what the trainer trains on
    eval_prompts: list[dict]
    report: data.LoadReport


def prepare(cfg: Config) -> Prepared:
    """Load the base model, give it ChatML, and load, validate, split and fit the conversations."""
    set_seed(cfg.training.seed)
    model, tokenizer = model_lib.load(cfg.model)
    tokens = template.add_chat_tokens(
        model, tokenizer, cfg.template.system_prompt, cfg.template.name, cfg.template.init
    )
    report = data.LoadReport()
    forbidden = template.special_texts(tokenizer) if cfg.template.special_text == "reject" else ()
    convs = data.load(cfg.data, forbidden, report)
    report.write_rejected(Path(cfg.output_dir) / "rejected.jsonl")
    data.check_rejected(report, cfg.data.max_rejected, ", ".join(s.path for s in cfg.data.sources))
    train_convs, held_out = data.split(convs, cfg.data.eval_share, cfg.data.seed)
    if cfg.data.train_size is not None:
        train_convs = train_convs[: cfg.data.train_size]
    encode = lambda cs: template.encode(tokenizer, [c.messages for c in cs], tokens)
    rows = data.fit_all(train_convs, encode(train_convs), cfg.data.max_length, cfg.data.overlength, report)
    report.kept = len(rows)
    if not rows:
        raise data.DataError("no usable training conversations:\n  " + "\n  ".join(report.lines()))
    prompts = data.eval_prompts(held_out, encode(held_out), cfg.data.max_length, cfg.data.seed)
    return Prepared(model, tokenizer, tokens, rows, prompts, report)


def sft_args(cfg: Config, on_cuda: bool) -> SFTConfig:
    t = cfg.training
    return SFTConfig(
        output_dir=str(Path(cfg.output_dir) / "trainer"),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 is a share of max_steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        seed=t.seed,
        gradient_checkpointing=t.gradient_checkpointing,
        report_to=[] if t.report_to == "none" else [t.report_to],
        # bf16 autocast only on CUDA; on CPU the weights are already bf16 and the adapters stay fp32.
        bf16=on_cuda and torch.cuda.is_bf16_supported(),
        # Rows come tokenised with `assistant_masks` (train/template.py: replies and their <|im_end|>); TRL turns
        # them into labels. (`assistant_only_loss` is for rows TRL tokenises itself.)
        assistant_only_loss=False,
        max_length=cfg.data.max_length,
        # Batches of similar length waste less compute on padding.
        train_sampling_strategy="group_by_length",
        save_strategy="no",
        disable_tqdm=False,
        dataset_num_proc=None,
    )


def train(cfg: Config, prepared: Prepared, callbacks: list | None = None) -> Path:
    """Fine-tune and write the adapter (LoRA + trained token rows) and tokenizer to `<output_dir>/adapter`."""
    set_seed(cfg.training.seed)
    peft_model = get_peft_model(
        prepared.model, model_lib.lora_config(cfg.lora, prepared.tokens.new_token_ids, prepared.model)
    )
    dataset = Dataset.from_list([{k: r[k] for k in ("input_ids", "assistant_masks")} for r in prepared.train])
    trainer = SFTTrainer(
        model=peft_model,
        args=sft_args(cfg, model_lib.device().type == "cuda"),
        train_dataset=dataset,
        processing_class=prepared.tokenizer,
        callbacks=callbacks,
    )
    head.install(peft_model.get_base_model())  # replaces the head SFTTrainer patched in; see train/head.py
    trainer.train()
    out = Path(cfg.output_dir) / "adapter"
    # Only LoRA and the trained token rows: the base and its resize are rebuilt identically at export.
    # (trainer.save_model would also write training_args.bin, a pickle, and the whole resized embedding.)
    if trainer.accelerator.is_main_process:
        peft_model.save_pretrained(out, save_embedding_layers=False)
        prepared.tokenizer.save_pretrained(out)
    return out
