"""Preference pairs of a model's own samples -> TRL's DPOTrainer with an NLL term on the chosen reply (iterative
RPO: `loss_type=["sigmoid", "sft"]`) -> adapter folder, as `sft.train` writes it.

The model is a ChatML model already (an SFT export): a fresh LoRA, no token rows trained, and the reference is the
same weights with the adapter disabled (TRL's default for a PEFT model without `ref_model`). Rows are
conversational, so TRL renders prompt, chosen and rejected with the model's own chat template: the ids the
reference scores are the ones evaluation and serving give the model (tests/test_improve.py dumps them). The rows
come in `step_order`'s order, so that a step can run as improve.micro_batches passes of similar length.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from peft import get_peft_model
from transformers import set_seed

from instructify.config import Config, dpo_passes
from instructify.training import guard, memory, sft, speed
from instructify.training import model as model_lib

FIELDS = ("prompt", "chosen", "rejected")


def dpo_args(cfg: Config, on_cuda: bool):
    from trl import DPOConfig

    i = cfg.improve
    shared = sft.trainer_args(cfg, on_cuda)
    # A step's pairs stay per_device_batch_size x accumulation; they run as improve.micro_batches passes.
    passes = dpo_passes(cfg)
    shared["per_device_train_batch_size"] //= passes
    shared["gradient_accumulation_steps"] *= passes
    return DPOConfig(
        **shared,
        beta=i.beta,
        # DPO on pairs that differ in one number can lower the right reply's own probability (Smaug/DPOP);
        # the NLL term on the chosen reply keeps it up (RPO).
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, i.sft_weight],
        max_length=cfg.data.max_length,
        save_strategy="no",  # a round is minutes long: it is run again, not resumed
        train_sampling_strategy="sequential",  # the order is step_order's, set on the tokenised rows
        disable_tqdm=False,
    )


def step_order(lengths: list[int], step_size: int, steps: int, seed: int) -> list[int]:
    """Row indices for `steps` optimizer steps of `step_size` rows: shuffled epoch after epoch, as a random
    sampler draws them, and each step's rows longest first, so that its micro-batches each pad to their own
    longest row instead of the step's. Why our own: transformers' group_by_length sorts across steps (a step of
    chit-chat pairs, then one of sums) and its batch_rebalance sizes micro-batches unequally, which reweights
    TRL's per-micro-batch means."""
    rng = random.Random(seed)
    drawn: list[int] = []
    while len(drawn) < steps * step_size:
        epoch = list(range(len(lengths)))
        rng.shuffle(epoch)
        drawn += epoch
    steps_rows = (drawn[s * step_size : (s + 1) * step_size] for s in range(steps))
    return [j for rows in steps_rows for j in sorted(rows, key=lambda j: -lengths[j])]


def trainer_for(cfg: Config, model, tokenizer, pairs: list[dict]):
    """The DPOTrainer of a round, its dataset tokenised (`trainer.train_dataset`: prompt_ids, chosen_ids,
    rejected_ids) in step_order's order. LoRA only: the ChatML rows were trained in SFT."""
    from datasets import Dataset
    from trl import DPOTrainer

    if not pairs:
        raise ValueError("improve.method=rpo: no pair of a right and a wrong reply to train on")
    set_seed(cfg.training.seed)
    peft_model = get_peft_model(model, model_lib.lora_config(cfg.lora, [], model))
    dataset = Dataset.from_list([{k: p[k] for k in FIELDS} for p in pairs])
    args = dpo_args(cfg, model_lib.device().type == "cuda")
    trainer = DPOTrainer(
        model=peft_model,
        ref_model=None,  # the adapter disabled
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[memory.ReleaseFreeMemory()],
    )
    rows = trainer.train_dataset  # TRL's filter may have dropped pairs whose prompt fills max_length
    limit = cfg.data.max_length  # TRL's collator cuts each sequence there
    lengths = [
        min(limit, len(p) + max(len(c), len(r)))
        for p, c, r in zip(rows["prompt_ids"], rows["chosen_ids"], rows["rejected_ids"])
    ]
    step_size = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    trainer.train_dataset = rows.select(step_order(lengths, step_size, args.max_steps, args.seed))
    return trainer


def train(cfg: Config, setup, pairs: list[dict]) -> Path:
    """Train on `pairs` ({prompt, chosen, rejected}: conversational) and write `<output_dir>/adapter`; the
    seconds and token counts go to `<output_dir>/dpo.json`."""
    from instructify import runs

    trainer = trainer_for(cfg, setup.model, setup.tokenizer, pairs)
    out = Path(cfg.output_dir)
    finite = guard.FiniteGuard()
    trainer.add_callback(finite)
    # padding share and step times (the reference's forward, the adapter disabled, is counted with the policy's)
    trainer.add_callback(speed.Throughput(out / "speed.json", setup.tokenizer.pad_token_id))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    if finite.failed_step is not None:
        raise guard.Diverged(
            f"non-finite loss or gradient at step {finite.failed_step}: lower improve.learning_rate"
        )
    rows = trainer.train_dataset
    runs.write_json(
        out / "dpo.json",
        {
            "pairs": len(pairs),
            "pairs_seen": len(rows),  # steps x pairs per step, in step_order's order
            "micro_batches": dpo_passes(cfg),
            "steps": trainer.state.global_step,
            "seconds": round(seconds, 1),
            "tokens_seen": {k: sum(map(len, rows[f"{k}_ids"])) for k in FIELDS},
            "log": trainer.state.log_history,
        },
    )
    trainer.model.save_pretrained(out / "adapter", save_embedding_layers=False)
    setup.tokenizer.save_pretrained(out / "adapter")
    return out / "adapter"
