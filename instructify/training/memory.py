"""Keeps a CPU run's resident memory to what it uses: every TRIM_EVERY steps, and after each check and save, the
heap's free pages go back to the OS (instructify/kernels.py release_free_memory). Our own: neither transformers
nor accelerate trims glibc's heap."""

from __future__ import annotations

from transformers import TrainerCallback

from instructify import kernels

# Not every step: the next step faults the returned pages in again (zeroed by the kernel).
TRIM_EVERY = 10


class ReleaseFreeMemory(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % TRIM_EVERY == 0:
            kernels.release_free_memory()

    def on_evaluate(self, args, state, control, **kwargs):
        kernels.release_free_memory()

    def on_save(self, args, state, control, **kwargs):
        kernels.release_free_memory()
