"""Bounds on what CPU torch keeps per matmul shape, for every process that meets many shapes: the server (rows x
cache length change at each step), training (each batch has its own length) and batched evaluation.

CPU torch keeps the kernels of each bf16 matmul shape in two caches, oneDNN's primitive cache and ideep's LRU
(1,024 shapes each by default), and glibc's rising mmap threshold keeps the freed buffers of each new shape in a
fragmenting heap. Unbounded, a server's memory climbed ~20 MB/min for minutes (docs/serving.md) and a tool-calling
training run grew from 11 GB to the machine's 24 GB in 200 steps (docs/tools.md)."""

from __future__ import annotations

import contextlib
import ctypes
import os

# At 64 a server's memory was flat after 45 s and no slower than at 1,024 (docs/serving.md).
KERNEL_CACHE_SHAPES = 64
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's initial threshold, which it would otherwise raise as buffers are freed


def bound_kernel_caches(shapes: int = KERNEL_CACHE_SHAPES) -> None:
    """Cap the bf16 matmul kernel caches (a value already in the environment wins). Both libraries read their
    variable at the process's first bf16 matmul, so this must run before a model's first step."""
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, str(shapes))


def keep_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at its initial 128 KiB (MALLOC_MMAP_THRESHOLD_ in the environment wins): on AMX
    CPUs the bf16 kernels' buffers of each new shape otherwise fragment the heap, which glibc's rising threshold
    keeps them in (tests/test_serve.py's 180 new lengths: +68 MB with the caches capped, +15 MB so). For the
    server only: a training step's activations (megabytes each) then all come from fresh zeroed pages, and steps
    of the tool config took 50 s instead of 7 (the kernel's time, zeroing pages)."""
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator has no such threshold
            ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim). Batches of new lengths free buffers of
    new sizes, which glibc keeps in its heap for reuse: a tool-calling training run held 6.0 GB of such free
    memory by step 55 (13.5 GB resident, 7.4 GB after one trim) and grew to the machine's 24 GB by step 200."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
