"""The trainer's memory hygiene (instructify/training/memory.py): the heap's free pages go back to the OS."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from instructify.training import memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_free_heap_memory_goes_back_to_the_os_every_trim_steps():
    """As a run's batches of new lengths do: a large buffer freed raises glibc's mmap threshold, so the next
    ~300 MB of buffers come from the heap; freed, all but the last, they stay resident until trimmed."""
    big = torch.ones(16 << 20, dtype=torch.uint8)  # under glibc's 32 MB cap on the threshold
    del big  # a freed mmapped chunk: glibc raises its mmap threshold to its size
    bufs = [torch.ones((1 << 20) + k * 4096, dtype=torch.uint8) for k in range(300)]
    keep = bufs[-1]
    del bufs
    held = _rss_mb()
    callback = memory.ReleaseFreeMemory()
    callback.on_step_end(None, SimpleNamespace(global_step=memory.TRIM_EVERY + 1), None)
    assert _rss_mb() > held - 100  # not a trim step
    callback.on_step_end(None, SimpleNamespace(global_step=memory.TRIM_EVERY), None)
    assert _rss_mb() < held - 200, (held, _rss_mb())
    del keep
