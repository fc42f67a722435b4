"""The baseline of `make bench`: plain TRL, as a user would write it, on the same model, data and LoRA settings.

    python scripts/bench_trl.py [--config configs/quickstart.yaml] [--steps 12] [--out runs/bench/trl.json]
        [--sft gradient_checkpointing=false ...] [config overrides, e.g. model.dtype=float32]

Same inputs as `instructify sft`: the base model with the ChatML tokens added, the tokenised rows (input_ids
and assistant_masks, so both train on exactly the same tokens), the same LoRA config (its trainable token rows
included) and the run's steps, batch size, learning rate, schedule and max length. Everything else is SFTConfig's
default (bf16 autocast, gradient checkpointing, random order, padding to the longest row). `make bench` loads the
model with SDPA attention, what `from_pretrained` gives a plain TRL script (`model.attn_implementation=sdpa`; our
CPU default is eager). With --fixed-batches it trains on the bench's fixed draw of rows in order instead of its
random order. Throughput is measured by the same callback as ours (instructify/training/speed.py) and written to --out.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instructify import config as config_lib  # noqa: E402
from instructify.evals import conformance  # noqa: E402
from instructify.training import model as model_lib  # noqa: E402
from instructify.training import (
    monitor,  # noqa: E402
    sft,  # noqa: E402
    speed,  # noqa: E402
)


class TimeLimit(TrainerCallback):
    """Ends training once `seconds` have passed, after at least 2 steps (one warm-up, one timed): where a CPU
    emulates the arm's dtype a TRL step takes minutes (bench/NOTES.md), and a bench must still finish."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= 2 and time.perf_counter() - self.start >= self.seconds:
            control.should_training_stop = True


def fixed_rows(available: int, count: int, seed: int) -> list[int]:
    """The bench's fixed batches: a seeded random draw of rows (random, so its lengths are the data's mix), taken in
    order by every arm, so that every arm trains on exactly the same batches."""
    rng, rows = random.Random(seed), []
    while (
        len(rows) < count
    ):  # more rows than the data holds: another shuffled pass, as a sampler's next epoch
        rows += rng.sample(range(available), available)
    return rows[:count]


def fixed_count(cfg, steps: int) -> int:
    t = cfg.training
    return steps * t.per_device_batch_size * t.gradient_accumulation_steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", default="runs/bench/trl.json")
    p.add_argument(
        "--quality",
        action="store_true",
        help="after training, evaluate like `make train` does: eval.num_conversations held-out prompts, greedy",
    )
    p.add_argument(
        "--fixed-batches",
        action="store_true",
        help="train on the bench's fixed draw of rows, in order (the same batches as every other arm)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=0,
        help="end training once this many seconds have passed, after at least 2 steps (0: run every step)",
    )
    p.add_argument("--sft", nargs="*", default=[], help="SFTConfig overrides as key=value (yaml values)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model.dtype=float32")
    args = p.parse_args()

    cfg = config_lib.load(args.config, args.overrides)
    prepared = sft.setup(cfg)  # base model + ChatML tokens + tokenised rows: identical for both arms
    t = cfg.training
    overrides = {k: config_lib.yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.sft)}
    train_rows = prepared.data.train
    if args.fixed_batches:
        train_rows = train_rows.select(fixed_rows(len(train_rows), fixed_count(cfg, args.steps), t.seed))
        overrides["train_sampling_strategy"] = "sequential"
    sft_args = SFTConfig(
        output_dir=str(Path(args.out).with_suffix("")),
        max_steps=args.steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        max_length=cfg.data.max_length,
        seed=t.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),  # SFTConfig's bf16 default refuses a CPU otherwise
        **overrides,
    )
    model = prepared.model
    meter = speed.Throughput(None, prepared.tokenizer.pad_token_id)
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=train_rows.select_columns(["input_ids", "assistant_masks"]),
        processing_class=prepared.tokenizer,
        peft_config=model_lib.lora_config(cfg.lora, prepared.tokens.new_token_ids, model),
        callbacks=[meter, *([TimeLimit(args.seconds)] if args.seconds else [])],
    )
    # TRL 1.16's fused LM head reads `lm_head.bias`, which PEFT's trainable-token wrapper of a tied head lacks
    # ('TrainableTokensWrapper' object has no attribute 'bias'); the smallest fix that lets the plain script run:
    head = trainer.model.get_base_model().get_output_embeddings()
    if not hasattr(head, "bias"):
        head.bias = None
    trainer.train()
    done = len(meter.steps)
    meter.warmup = min(meter.warmup, done - 1)  # stopped early: every step after the first is timed
    result = {"arm": "trl", "sft_overrides": overrides, "dtype": str(model.dtype), **meter.summary()}
    if done < args.steps:
        result["bounded"] = {"seconds": args.seconds, "steps_done": done, "steps_asked": args.steps}
    result["losses"] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # the held-out conversations ours scores at its last step (eval.monitor_conversations), scored the same way;
    # with --quality all of those `make train` evaluates, generation included
    e = cfg.eval
    prompts = prepared.data.eval_prompts[: e.num_conversations if args.quality else e.monitor_conversations]
    with monitor.fast_inference(trainer.model):
        scores = conformance.teacher_forced(trainer.model, prepared.tokenizer, prompts)
        if args.quality:
            replies = conformance.generate(
                trainer.model, prepared.tokenizer, prompts, e.max_new_tokens, e.batch_size
            )
            scores.update(conformance.summarize(replies))
    keys = ("eval_loss", "stop_token_prob", "stop_token_top1", "stop_rate", "clean_stop_rate", "loop_rate")
    result["eval"] = {k: scores[k] for k in keys if k in scores}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
