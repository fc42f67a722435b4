"""The machine a benchmark ran on, as every published time names it: the CPU's model and the flags that decide its
matmul speed (AVX2, AVX-512, AVX-512-BF16, AMX)."""

from __future__ import annotations

from instructify.runs import cpu


def cpu_flags() -> str:
    return cpu()
