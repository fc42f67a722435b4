"""Preference pairs of a model's own samples -> TRL's DPOTrainer with an NLL term on the chosen reply (iterative
RPO: `loss_type=["sigmoid", "sft"]`) -> adapter folder, as `sft.train` writes it.

The model is a ChatML model already (an SFT export): a fresh LoRA, no token rows trained, and the reference is the
same weights with the adapter disabled (TRL's default for a PEFT model without `ref_model`). Rows are
conversational, so TRL renders prompt, chosen and rejected with the model's own chat template: the ids the
reference scores are the ones evaluation and serving give the model (tests/test_improve.py dumps them).
"""

from __future__ import annotations

import time
from pathlib import Path

from peft import get_peft_model
from transformers import set_seed

from instructify.config import Config
from instructify.training import guard, memory, sft
from instructify.training import model as model_lib

FIELDS = ("prompt", "chosen", "rejected")


def dpo_args(cfg: Config, on_cuda: bool):
    from trl import DPOConfig

    i = cfg.improve
    return DPOConfig(
        **sft.trainer_args(cfg, on_cuda),
        beta=i.beta,
        # DPO on pairs that differ in one number can lower the right reply's own probability (Smaug/DPOP);
        # the NLL term on the chosen reply keeps it up (RPO).
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, i.sft_weight],
        max_length=cfg.data.max_length,
        save_strategy="no",  # a round is minutes long: it is run again, not resumed
        disable_tqdm=False,
    )


def trainer_for(cfg: Config, model, tokenizer, pairs: list[dict]):
    """The DPOTrainer of a round, its dataset tokenised (`trainer.train_dataset`: prompt_ids, chosen_ids,
    rejected_ids). LoRA only: the ChatML rows were trained in SFT."""
    from datasets import Dataset
    from trl import DPOTrainer

    if not pairs:
        raise ValueError("improve.method=rpo: no pair of a right and a wrong reply to train on")
    set_seed(cfg.training.seed)
    peft_model = get_peft_model(model, model_lib.lora_config(cfg.lora, [], model))
    dataset = Dataset.from_list([{k: p[k] for k in FIELDS} for p in pairs])
    return DPOTrainer(
        model=peft_model,
        ref_model=None,  # the adapter disabled
        args=dpo_args(cfg, model_lib.device().type == "cuda"),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[memory.ReleaseFreeMemory()],
    )


def train(cfg: Config, setup, pairs: list[dict]) -> Path:
    """Train on `pairs` ({prompt, chosen, rejected}: conversational) and write `<output_dir>/adapter`; the
    seconds and token counts go to `<output_dir>/dpo.json`."""
    from instructify import runs

    trainer = trainer_for(cfg, setup.model, setup.tokenizer, pairs)
    finite = guard.FiniteGuard()
    trainer.add_callback(finite)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    if finite.failed_step is not None:
        raise guard.Diverged(
            f"non-finite loss or gradient at step {finite.failed_step}: lower improve.learning_rate"
        )
    rows = trainer.train_dataset
    out = Path(cfg.output_dir)
    runs.write_json(
        out / "dpo.json",
        {
            "pairs": len(rows),
            "steps": trainer.state.global_step,
            "seconds": round(seconds, 1),
            "tokens": {k: sum(map(len, rows[f"{k}_ids"])) for k in FIELDS},
            "log": trainer.state.log_history,
        },
    )
    trainer.model.save_pretrained(out / "adapter", save_embedding_layers=False)
    setup.tokenizer.save_pretrained(out / "adapter")
    return out / "adapter"
