"""The trainer's memory hygiene (instructify/training/memory.py): the heap's free pages go back to the OS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# In a fresh interpreter: the heap's state is this process's history (the server's tests fix glibc's mmap
# threshold, after which no freed buffer stays in the heap and there is nothing to trim).
SCENARIO = textwrap.dedent(
    """
    import json, os
    from types import SimpleNamespace
    import torch
    from instructify.training import memory

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    base = rss()
    big = torch.ones(16 << 20, dtype=torch.uint8)  # under glibc's 32 MB cap on the threshold
    del big  # a freed mmapped chunk: glibc raises its mmap threshold to its size
    bufs = [torch.ones((1 << 20) + k * 4096, dtype=torch.uint8) for k in range(300)]
    keep = bufs[-1]
    del bufs
    held = rss()
    callback = memory.ReleaseFreeMemory()
    callback.on_step_end(None, SimpleNamespace(global_step=memory.TRIM_EVERY + 1), None)
    untrimmed = rss()
    callback.on_step_end(None, SimpleNamespace(global_step=memory.TRIM_EVERY), None)
    print(json.dumps({"base": base, "held": held, "untrimmed": untrimmed, "trimmed": rss()}))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_free_heap_memory_goes_back_to_the_os_every_trim_steps():
    """As a run's batches of new lengths do: a large buffer freed raises glibc's mmap threshold, so the next
    ~300 MB of buffers come from the heap; freed, all but the last, they stay resident until trimmed."""
    out = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, check=True).stdout
    mb = json.loads(out.splitlines()[-1])
    assert mb["held"] > mb["base"] + 250, mb  # the freed buffers really stayed in the heap
    assert mb["untrimmed"] > mb["held"] - 100, mb  # not a trim step
    assert mb["trimmed"] < mb["held"] - 200, mb
