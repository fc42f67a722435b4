"""Speed settings keep the numerics, and the throughput meter counts what was trained.

The fast path (bf16 weights with fp32 adapters and token rows, the trained-positions head, the token-row lookup)
trains a tiny model to the losses of an fp32 reference that runs through PEFT's and transformers' own code; a
padding-free batch scores exactly as a padded one (no example attends to another).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import _reply_mask, conversations
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from instructify import config
from instructify.chat import template
from instructify.config import LoraConfig
from instructify.modules import head, token_rows
from instructify.training import sft, speed
from instructify.training.model import lora_config

ROOT = Path(__file__).resolve().parent.parent


def _rows(tok, n: int = 6) -> list[dict]:
    out = []
    for conv in conversations(n):
        ids, mask = _reply_mask(tok, conv["messages"])
        out.append({"input_ids": ids, "assistant_masks": mask})
    return out


def _model(path, dtype, fast: bool):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(path)
    tokens = template.add_chat_tokens(model, tok)
    torch.manual_seed(0)
    pm = get_peft_model(model, lora_config(LoraConfig(r=4, alpha=8), tokens.new_token_ids, model))
    if fast:
        token_rows.install(pm)
        head.install(pm.get_base_model())
    return pm, tok


def _train(path, dtype, fast: bool, steps: int = 8) -> list[float]:
    pm, tok = _model(path, dtype, fast)
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(_rows(tok))
    batch.pop("assistant_masks", None)
    optimizer = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = pm(**batch, fused_lm_head=True).loss if fast else pm(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_fast_path_in_bf16_keeps_the_fp32_losses(gemma_like):
    reference = _train(gemma_like, torch.float32, fast=False)
    fast_fp32 = _train(gemma_like, torch.float32, fast=True)
    fast_bf16 = _train(gemma_like, torch.bfloat16, fast=True)
    assert reference[-1] < reference[0] - 0.3  # it learns, so the comparison covers the updates
    # the fast path alone changes nothing beyond float rounding; bf16 weights stay within 1% of fp32
    # (measured: 0.15% at most over 8 steps)
    assert fast_fp32 == pytest.approx(reference, rel=1e-4)
    assert fast_bf16 == pytest.approx(reference, rel=1e-2)


def test_padding_free_batch_scores_as_the_padded_one(gemma_like):
    """Rows concatenated into one with position ids restarting per row: the per-token log-probs (and so the
    loss) equal the padded batch's, so the block-diagonal mask keeps examples from attending to each other."""
    pm, tok = _model(gemma_like, torch.float32, fast=True)
    rows = _rows(tok)
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    flat = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    assert "attention_mask" not in flat and flat["input_ids"].shape[0] == 1
    a = pm(**{k: v for k, v in padded.items() if k != "assistant_masks"}, fused_lm_head=True)
    b = pm(**{k: v for k, v in flat.items() if k != "assistant_masks"}, fused_lm_head=True)
    torch.testing.assert_close(b.log_probs[b.label_mask], a.log_probs[a.label_mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("padding_free", [False, True])
def test_throughput_counts_every_token_of_an_epoch(tiny_config, padding_free):
    """Every step is one whole epoch (batch = all training rows): the meter saw every token and trained label."""
    training = {"max_steps": 3, "padding_free": padding_free}
    overrides = ["eval.monitor_every=0", "eval.monitor_generate_every=0"]
    cfg = config.load(tiny_config("speed", training=training), overrides)
    prepared = sft.setup(cfg)
    rows = prepared.data.train
    cfg.training.per_device_batch_size = len(rows)
    assert len({len(r) for r in rows["input_ids"]}) > 1  # rows of several lengths: padding when padded
    meter = speed.Throughput(None, prepared.tokenizer.pad_token_id, warmup=0)
    sft.train(cfg, prepared, callbacks=[meter])
    summary = meter.summary()
    assert summary["steps_timed"] == 3
    assert summary["tokens"] == 3 * sum(len(r) for r in rows["input_ids"])
    # every reply token is a label; position 0 (a bos or <|im_start|>) never is
    assert summary["trained_tokens"] == 3 * sum(sum(m) for m in rows["assistant_masks"])
    assert (summary["padding_share"] == 0) == padding_free
    assert summary["train_peak_rss_mb"] > 100
    written = json.loads((tiny_config("speed").parent / "speed" / "speed.json").read_text())
    assert written["steps_timed"] == 1 and written["warmup_steps"] == 2  # sft's own meter, 2 warm-up steps
    # the machine beside the times: this CPU's own model name and matmul flags, and the dtype trained in
    cpuinfo = Path("/proc/cpuinfo").read_text()
    assert written["cpu"].split(",")[0] in cpuinfo and ("avx2" in written["cpu"]) == (" avx2" in cpuinfo)
    assert written["dtype"] == str(prepared.model.dtype).removeprefix("torch.")


def test_flops_per_token_and_peak_table(gemma_like):
    """Both conventions against torch's own FLOP counter on a real forward and backward (eager attention: the
    T x T score and value matmuls run in full, as the PaLM attention term counts them): `full` is a step that
    trains every weight, `lora` one where the weights are frozen and only input gradients flow."""
    from torch.utils.flop_counter import FlopCounterMode

    model = AutoModelForCausalLM.from_pretrained(gemma_like, dtype=torch.float32, attn_implementation="eager")
    length = 10
    ids = torch.randint(0, model.config.vocab_size, (1, length))

    def counted(train_weights: bool) -> float:
        for p in model.parameters():
            p.requires_grad_(train_weights)
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
        with FlopCounterMode(display=False) as counter:
            model(inputs_embeds=embeds).logits.sum().backward()
        return counter.get_total_flops() / length

    flops = speed.flops_per_token(model, length)
    assert flops == {"full": counted(True), "lora": counted(False)}
    assert speed.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert speed.peak_flops("NVIDIA H200") == 989e12
    assert speed.peak_flops("Some CPU") is None


@pytest.mark.slow
def test_bench_compares_plain_trl_and_ours_on_a_tiny_model(tiny_config, tmp_path):
    """`make bench`'s driver end to end: both kinds of arm run on the same fixed batches and in their own order,
    are measured the same way, and are compared; the headline is the lower ratio."""
    out = tmp_path / "results.json"
    args = [sys.executable, "scripts/bench_train.py", "--config", str(tiny_config("bench")), "--steps", "3"]
    args += ["--rounds", "1", "--own-steps", "4", "--arms", "trl-defaults,ours"]
    args += ["--out", str(out), "--runs-dir", str(tmp_path / "r")]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    fixed, own = report["fixed_batches"], report["own_order"]
    assert set(fixed) == set(own) == {"trl-defaults", "ours"}
    for arm in [*fixed.values(), *own.values()]:
        assert arm["tokens_per_s"] > 0 and arm["trained_tokens_per_s"] > 0 and arm["train_peak_rss_mb"] > 100
        assert arm["eval"]["eval_loss"] > 0
    assert fixed["ours"]["steps_timed"] == fixed["trl-defaults"]["steps_timed"] == 1
    assert own["ours"]["steps_timed"] == 2 and own["trl-defaults"]["steps_timed"] == 1
    # the same batches in both arms of the fixed comparison: the same tokens and trained tokens per step
    a, b = fixed["ours"]["runs"][0], fixed["trl-defaults"]["runs"][0]
    assert (a["tokens"], a["trained_tokens"]) == (b["tokens"], b["trained_tokens"])
    ratios = report["ratios"]
    assert report["headline"]["ours/trl-defaults"] == min(
        ratios["fixed_batches"]["ours/trl-defaults"], ratios["own_order"]["ours/trl-defaults"]
    )
    md = out.with_suffix(".md").read_text()
    assert "## fixed batches" in md and "## own order" in md and "| trl-defaults |" in md


@pytest.mark.slow
def test_bench_bounds_a_trl_arm_by_its_seconds(tiny_config, tmp_path):
    """A TRL arm past --arm-seconds ends its run after 2 steps (one timed) and skips its later runs, with what it
    measured kept: on an AVX2 CPU TRL's emulated bf16 takes minutes a step, and `make bench` must still finish."""
    out = tmp_path / "results.json"
    args = [sys.executable, "scripts/bench_train.py", "--config", str(tiny_config("bench")), "--steps", "5"]
    args += ["--rounds", "2", "--own-steps", "0", "--arms", "trl-defaults", "--arm-seconds", "0.001"]
    args += ["--out", str(out), "--runs-dir", str(tmp_path / "r")]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    arm = report["fixed_batches"]["trl-defaults"]
    assert len(arm["runs"]) == 1 and arm["steps_timed"] == 1 and arm["tokens_per_s"] > 0
    assert arm["runs"][0]["bounded"] == {"seconds": 0.001, "steps_done": 2, "steps_asked": 5}
    assert report["skipped"] == {"trl-defaults": ["fixed-1"]}
    assert "trl-defaults: fixed-1 skipped" in out.with_suffix(".md").read_text()
