"""config -> base model with ChatML -> data -> SFTTrainer (LoRA + trainable token rows) -> adapter folder."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, set_seed
from trl import SFTConfig, SFTTrainer

from instructify import runs
from instructify.chat import template, tools
from instructify.config import Config, to_dict
from instructify.data import prepare as prepare_lib
from instructify.modules import head, token_rows
from instructify.training import distributed, guard, memory, sharding, speed
from instructify.training import model as model_lib
from instructify.training.monitor import ConformanceMonitor

log = logging.getLogger(__name__)


@dataclass
class Setup:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    tokens: template.ChatTokens
    data: prepare_lib.Prepared


def setup(cfg: Config) -> Setup:
    """Load the base model, give it ChatML, and prepare (or read from cache) the tokenised conversations."""
    distributed.start()  # refuses a launch that cannot run here before anything is loaded
    set_seed(cfg.training.seed)
    model, tokenizer = model_lib.load(cfg.model)
    tokens = template.add_chat_tokens_from(cfg.template, model, tokenizer)
    return Setup(model, tokenizer, tokens, prepare_lib.prepare(cfg, tokenizer, tokens))


def trainer_args(cfg: Config, on_cuda: bool) -> dict:
    """The TrainingArguments every trainer of ours shares (SFT here, an improve round's DPO): run folder, steps,
    optimiser and schedule, logging, precision."""
    t = cfg.training
    return dict(
        output_dir=str(Path(cfg.output_dir) / "checkpoints"),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        lr_scheduler_kwargs=dict(t.lr_scheduler_kwargs),
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 is a share of max_steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        seed=t.seed,
        gradient_checkpointing=t.gradient_checkpointing,
        report_to=[] if t.report_to == "none" else [t.report_to],
        run_name=Path(cfg.output_dir).name,
        # bf16 autocast only on CUDA; on CPU the weights are already bf16 and the adapters stay fp32.
        bf16=on_cuda and torch.cuda.is_bf16_supported(),
    )


def sft_args(cfg: Config, on_cuda: bool, sampling: str | None = None) -> SFTConfig:
    """`sampling` overrides the data order (`sequential` for the benchmark's fixed batches)."""
    t = cfg.training
    return SFTConfig(
        **trainer_args(cfg, on_cuda),
        # Rows come tokenised with `assistant_masks` (instructify/chat/template.py: replies and their <|im_end|>); TRL turns
        # them into labels. (`assistant_only_loss` is for rows TRL tokenises itself.)
        assistant_only_loss=False,
        # Rows are already cut to data.max_length at a turn boundary; TRL refuses the limit with padding_free.
        max_length=None if t.padding_free else cfg.data.max_length,
        # Batches of similar length waste less compute on padding.
        train_sampling_strategy=sampling or ("group_by_length" if t.group_by_length else "random"),
        # One row per batch, position ids restarting per example (transformers masks across them).
        padding_free=t.padding_free,
        # Checkpoints (LoRA, token rows, optimizer, scheduler, RNG) to resume from; guard.py marks complete ones.
        save_strategy="steps" if t.save_steps > 0 else "no",
        save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit,
        disable_tqdm=False,
        dataset_num_proc=None,
    )


def resume_point(resume: str, checkpoints: Path) -> Path | None:
    """training.resume: no, auto (the newest complete checkpoint, if any), or a checkpoint folder."""
    if resume == "no":
        return None
    if resume == "auto":
        path, skipped = runs.newest_checkpoint(checkpoints)
        for reason in skipped:
            log.warning("resume: skipped %s", reason)
        log.info(
            "resume: %s", f"from {path}" if path else f"no complete checkpoint in {checkpoints}, from step 0"
        )
        return path
    path = Path(resume)
    if not (path / runs.MARKER).is_file():
        raise runs.RunError(f"training.resume: {path} is not a complete checkpoint (no {runs.MARKER} marker)")
    return path


class TrackConfig(TrainerCallback):
    """Puts the run's own config next to TrainingArguments in wandb (after WandbCallback has started the run;
    rank 0 only, as only it has one)."""

    def __init__(self, cfg: Config, fingerprint: str):
        self.values = {"instructify": to_dict(cfg), "data_fingerprint": fingerprint}
        self.done = False

    def _update(self) -> None:
        import wandb

        if not self.done and wandb.run is not None:
            wandb.config.update(self.values, allow_val_change=True)
            self.done = True

    def on_train_begin(self, args, state, control, **kwargs):
        self._update()

    def on_log(self, args, state, control, **kwargs):
        self._update()  # in case the run started after train_begin


def train(cfg: Config, setup: Setup, callbacks: list | None = None, sampling: str | None = None) -> Path:
    """Fine-tune `setup` (the base with ChatML and the prepared data) and write the adapter (LoRA + trained token
    rows) and tokenizer to `<output_dir>/adapter`."""
    world = distributed.start()
    set_seed(cfg.training.seed)
    peft_model = get_peft_model(
        setup.model, model_lib.lora_config(cfg.lora, setup.tokens.new_token_ids, setup.model)
    )
    dataset = setup.data.train.select_columns(["input_ids", "assistant_masks"])
    preemption, finite = guard.Preemption(), guard.FiniteGuard()
    tracking = []
    if cfg.training.report_to == "wandb":
        os.environ.setdefault("WANDB_PROJECT", "instructify")
        tracking.append(TrackConfig(cfg, setup.data.fingerprint))
    if world.world_size > 1:
        tracking.append(
            distributed.StepRecord(Path(cfg.output_dir) / "data_parallel.jsonl", setup.tokenizer.pad_token_id)
        )
    monitor = ConformanceMonitor(
        setup.tokenizer, setup.data.eval_prompts, Path(cfg.output_dir) / "curve.jsonl", cfg.eval
    )
    trainer = SFTTrainer(
        model=peft_model,
        args=sft_args(cfg, model_lib.device().type == "cuda", sampling),
        train_dataset=dataset,
        processing_class=setup.tokenizer,
        callbacks=[
            # first, so that its step clock stops before the monitor's checks and the checkpoint marker run
            speed.Throughput(Path(cfg.output_dir) / "speed.json", setup.tokenizer.pad_token_id),
            *(callbacks or []),
            monitor,
            guard.CheckpointMarker(),
            memory.ReleaseFreeMemory(),
            preemption,
            finite,
            *tracking,
        ],
    )
    distributed.verify(trainer, world)  # the trainer's own accelerator, not the launcher's word
    monitor.trainer = trainer
    # Our two speed patches, both here and in this order. SFTTrainer patches its own fused LM head into the model
    # while it is built, so ours (instructify/modules/head.py) can only replace it after that; the embedding lookup
    # (instructify/modules/token_rows.py) changes nothing SFTTrainer reads or patches and only has to be in before training.
    token_rows.install(peft_model)
    head.install(
        peft_model.get_base_model(), cfg.training.decision_weight, [tools.closing_ids(setup.tokenizer)]
    )
    checkpoints = Path(cfg.output_dir) / "checkpoints"
    start = resume_point(cfg.training.resume, checkpoints)
    try:
        trainer.train(resume_from_checkpoint=str(start) if start else None)
    finally:
        preemption.restore()
    if finite.failed_step is not None:
        last, _ = runs.newest_checkpoint(checkpoints)
        raise guard.Diverged(
            f"non-finite loss or gradient at step {finite.failed_step} (learning rate {finite.learning_rate:.3g}); "
            f"stopped before applying it. Last good checkpoint: {last or 'none'}. Lower training.learning_rate "
            "or check the data, then resume with training.resume=auto"
        )
    if preemption.signal:
        last, _ = runs.newest_checkpoint(checkpoints)
        raise guard.Preempted(
            f"{preemption.signal} at step {preemption.step}: checkpoint {last} saved; "
            "run again with training.resume=auto to continue"
        )
    if cfg.training.keep == "best":
        keep_best(cfg, trainer, peft_model, checkpoints)
    out = Path(cfg.output_dir) / "adapter"
    # Only LoRA and the trained token rows: the base and its resize are rebuilt identically at export.
    # (trainer.save_model would also write training_args.bin, a pickle, and the whole resized embedding.)
    # Sharded (FSDP, ZeRO): every rank takes part in gathering the whole adapter, rank 0 writes it; else None.
    state_dict = sharding.adapter_state_dict(trainer.accelerator, trainer.model, trainer.model_wrapped)
    if trainer.accelerator.is_main_process:
        peft_model.save_pretrained(out, save_embedding_layers=False, state_dict=state_dict)
        setup.tokenizer.save_pretrained(out)
    return out


def keep_best(cfg: Config, trainer, peft_model, checkpoints: Path) -> None:
    """Put the weights of the checkpoint the monitor's generation checks scored best into `peft_model` (our own:
    Trainer's load_best_model_at_end needs its evaluate loop; ours is the monitor), and record the choice in
    <output_dir>/kept.json. The last step wins a tie."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from instructify.evals.report import read_curve
    from instructify.training.monitor import best_check, score

    trainer.accelerator.wait_for_everyone()  # rank 0 wrote the curve and the checkpoints
    done = {
        int(p.name.split("-")[1]): p for p in checkpoints.glob("checkpoint-*") if (p / runs.MARKER).is_file()
    }
    curve = read_curve(Path(cfg.output_dir) / "curve.jsonl")
    best = best_check(curve, set(done))
    last = trainer.state.global_step
    if best is None:
        log.warning(
            "training.keep=best: no generation check fell on a checkpoint step; keeping the last step"
        )
        return
    if best["step"] != last:
        set_peft_model_state_dict(peft_model, load_file(done[best["step"]] / "adapter_model.safetensors"))
    checks = {c["step"]: round(score(c), 4) for c in curve if c["step"] in done and "clean_stop_rate" in c}
    log.info(
        "training.keep=best: step %d (score %.3f; checks at checkpoints: %s)",
        best["step"],
        score(best),
        checks,
    )
    if trainer.accelerator.is_main_process:
        runs.write_json(
            Path(cfg.output_dir) / "kept.json", {"step": best["step"], "last_step": last, "scores": checks}
        )
