"""Training throughput: tokens/s, step time, padding share, peak memory and MFU, measured the same way for any
Trainer (ours and the plain TRL baseline in scripts/bench_trl.py), written to `<output_dir>/speed.json`; under a
launcher the figures are rank 0's (multiply tokens/s by the number of processes).

Why our own: transformers counts `num_input_tokens_seen` but not the trained (label) tokens, the padding share,
per-step times without the first steps, or MFU on a LoRA basis.
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import PreTrainedModel, TrainerCallback

from instructify import runs

# Dense bf16 tensor-core peak (FLOP/s) by device-name fragment, from the vendors' data sheets (SXM parts).
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "RTX 4090": 165e12,
}


def peak_flops(device_name: str) -> float | None:
    for fragment, flops in PEAK_BF16_FLOPS.items():
        if fragment in device_name:
            return flops
    return None


def flops_per_token(model: PreTrainedModel, seq_len: float) -> dict[str, float]:
    """Training FLOPs per token, both conventions. `full`: 6N + attention (PaLM: 12 * layers * heads * head_dim *
    seq_len), as if every weight were trained. `lora`: 4N + attention, the frozen weights skip their weight
    gradient (forward 2N + input gradient 2N). N counts the matmul weights, the output layer included, not the
    input embedding lookup."""
    cfg = model.config.get_text_config()
    embedding = model.get_input_embeddings().weight
    n = sum(  # matmul weights are the 2-d ones (norm scales and biases are not matmuls)
        p.numel()
        for name, p in model.named_parameters()
        if p.dim() >= 2 and p is not embedding and "lora_" not in name
    )
    n += embedding.numel() if model.get_output_embeddings().weight is embedding else 0
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * seq_len
    return {"full": 6 * n + attention, "lora": 4 * n + attention}


def _step_peak_reset() -> None:
    """Reset the kernel's peak-RSS mark (Linux), so that a step's peak is the step's own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _step_peak_mb() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


def process_peak_memory_mb() -> dict[str, float]:
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        1 << 20 if sys.platform == "darwin" else 1 << 10
    )
    return {"peak_rss_mb": round(rss, 1)}


class Throughput(TrainerCallback):
    """Counts the tokens of every training forward (a forward pre-hook) and times every optimizer step, from
    step begin to step end: callbacks that run after it at step end (the conformance monitor, checkpoints) are not
    training time. The first `warmup` steps (allocations, kernel selection) are left out of the rates."""

    def __init__(self, out: Path | None, pad_id: int, warmup: int = 2):
        self.out, self.pad_id, self.warmup = out, pad_id, warmup
        self.counts = {"tokens": 0, "slots": 0, "trained": 0, "sequences": 0}
        self.steps: list[dict] = []
        self.handle = None
        self.model = None

    def _count(self, module, args, kwargs):
        if not module.training:
            return  # evaluation / monitor forwards are not training throughput
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask, labels, positions = (
            kwargs.get("attention_mask"),
            kwargs.get("labels"),
            kwargs.get("position_ids"),
        )
        c = self.counts
        c["slots"] += ids.numel()
        c["tokens"] += int(mask.sum()) if mask is not None else int((ids != self.pad_id).sum())
        if labels is not None:
            c["trained"] += int((labels[..., 1:] != -100).sum())
        if mask is None and positions is not None:  # padding-free: one row, a sequence starts at each 0
            c["sequences"] += int((positions == 0).sum())
        else:
            c["sequences"] += ids.shape[0]

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self.counts = dict.fromkeys(self.counts, 0)
        _step_peak_reset()
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        step = {"seconds": time.perf_counter() - self.begin, **self.counts, "peak_rss_mb": _step_peak_mb()}
        if torch.cuda.is_available():
            step["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / (1 << 20)
        self.steps.append(step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.remove()
        if self.out is not None and state.is_world_process_zero:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(self.summary(), indent=2) + "\n")

    def summary(self) -> dict:
        return summarize(self.steps, self.warmup, self.model)


def summarize(steps: list[dict], warmup: int, model=None) -> dict:
    """speed.json from the per-step records: rates over the steps after the first `warmup` (all of them when
    there are no more), memory peaks, and MFU on a GPU when the model is known."""
    timed = steps[warmup:] or steps
    seconds = sum(s["seconds"] for s in timed)
    total = {k: sum(s[k] for s in timed) for k in ("tokens", "slots", "trained", "sequences")}
    out = {
        **_rates(timed, len(steps) - len(timed), seconds, total),
        # the largest resident set (and GPU memory) within the training steps, then over the whole process
        **_step_peaks(steps),
        **process_peak_memory_mb(),
    }
    out["cpu"] = runs.cpu()  # a step's time depends on the CPU's matmul flags (AVX2 / AVX-512-BF16 / AMX)
    if model is not None:
        out["dtype"] = str(model.dtype).removeprefix("torch.")
    if model is not None and torch.cuda.is_available() and seconds and total["sequences"]:
        out.update(_mfu(model, out["tokens_per_s"], total["tokens"] / total["sequences"]))
    return out


def _rates(timed: list[dict], warmup_steps: int, seconds: float, total: dict[str, int]) -> dict:
    """Step times, token rates, padding share and token counts over the timed steps."""
    return {
        "steps_timed": len(timed),
        "warmup_steps": warmup_steps,
        "step_seconds_mean": round(seconds / max(1, len(timed)), 3),
        "step_seconds_median": round(statistics.median(s["seconds"] for s in timed), 3) if timed else None,
        "tokens_per_s": round(total["tokens"] / seconds, 1) if seconds else None,
        "trained_tokens_per_s": round(total["trained"] / seconds, 1) if seconds else None,
        "padding_share": round(1 - total["tokens"] / total["slots"], 4) if total["slots"] else None,
        "tokens": total["tokens"],
        "trained_tokens": total["trained"],
    }


def _step_peaks(steps: list[dict]) -> dict[str, float]:
    """train_peak_rss_mb, train_peak_gpu_mb: the largest of any step (warmup included), where measured."""
    return {
        f"train_{key}": round(max(s[key] for s in steps), 1)
        for key in ("peak_rss_mb", "peak_gpu_mb")
        if steps and steps[0].get(key) is not None
    }


def _mfu(model, tokens_per_s: float, seq_len: float) -> dict:
    """The CUDA device's name and the model FLOP utilisation on each basis (None on a device of unknown peak)."""
    name = torch.cuda.get_device_name()
    peak = peak_flops(name)
    per_token = flops_per_token(_unwrap(model), seq_len)
    out: dict = {"device": name}
    for basis, flops in per_token.items():
        out[f"mfu_{basis}"] = round(tokens_per_s * flops / peak, 4) if peak else None
    return out


def _unwrap(model) -> PreTrainedModel:
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model
