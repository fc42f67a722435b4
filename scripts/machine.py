"""The machine a benchmark ran on, as every published time names it: the CPU's model and the flags that decide its
matmul speed (AVX2, AVX-512, AVX-512-BF16, AMX)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_flags() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), ""
    )
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
    flags = set(info.split())
    return f"{model or platform.machine()}, {' '.join(f for f in wanted if f in flags)}"
