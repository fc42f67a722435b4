"""Callbacks that keep a run's checkpoints trustworthy: a completeness marker written last, a checkpoint and a
distinct exit on SIGTERM/SIGUSR1 (preemption, a scheduler's time limit), and a stop before a non-finite gradient
reaches the weights or a checkpoint."""

from __future__ import annotations

import logging
import math
import signal
import threading
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import TrainerCallback

from instructify.runs import MARKER
from instructify.training.distributed import any_rank, barrier

log = logging.getLogger(__name__)

EXIT_PREEMPTED = (
    75  # EX_TEMPFAIL: saved, run again with training.resume=auto (the SLURM script requeues on it)
)
EXIT_DIVERGED = 3


class Preempted(RuntimeError):
    exit_code = EXIT_PREEMPTED


class Diverged(RuntimeError):
    exit_code = EXIT_DIVERGED


# The frozen, resized embedding (and tied head) PEFT adds to an adapter whose base vocabulary grew: rebuilt
# identically from the base and the template on resume, as at export. 686 MB of a 716 MB quickstart checkpoint.
FROZEN_ROWS = "token_adapter.base_layer.weight"


def drop_frozen_embeddings(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        return
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
        if not any(k.endswith(FROZEN_ROWS) for k in keys):
            return
        kept = {k: f.get_tensor(k) for k in keys if not k.endswith(FROZEN_ROWS)}
        metadata = f.metadata()
    tmp = path.with_suffix(".tmp")
    save_file(kept, tmp, metadata=metadata)
    tmp.replace(path)


class CheckpointMarker(TrainerCallback):
    """on_save runs after the trainer has written the whole checkpoint: slim it, then the marker says it is
    complete."""

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written its part (its RNG state) before the folder is called complete
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                drop_frozen_embeddings(folder)
                (folder / MARKER).write_text(str(state.global_step))


class Preemption(TrainerCallback):
    """On SIGTERM or SIGUSR1: finish the current step, save a checkpoint, stop (then exit EXIT_PREEMPTED)."""

    def __init__(self):
        self.signal: str | None = None
        self.step = 0
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint after this step, then stopping", self.signal)

    def on_step_end(self, args, state, control, **kwargs):
        # Every rank must stop at the same step (a rank that trains on alone waits forever in its next
        # all-reduce), so a signal that reached any rank counts for all.
        if any_rank(bool(self.signal)) and not self.signal:
            self.signal = "signal on another rank"
        if self.signal:
            self.step = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class FiniteGuard(TrainerCallback):
    """Before each optimizer step: a NaN or inf gradient (so a non-finite loss) stops the run; the step is not
    applied and not saved, so the last checkpoint stays the last good state."""

    def __init__(self):
        self.failed_step: int | None = None
        self.learning_rate = math.nan

    def on_pre_optimizer_step(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if all(torch.isfinite(g).all() for g in grads):
            return
        self.failed_step = state.global_step + 1
        self.learning_rate = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else math.nan
        for p in model.parameters():
            p.grad = None  # the optimizer skips parameters without a gradient: the weights stay as they were
        control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.failed_step is not None:
            control.should_save = False
            control.should_log = False
