"""Sharded parameters (FSDP2, ZeRO-3) on the CPU, two processes (gloo): our head and row lookup read weights
outside the modules that own them, and the adapter is saved on rank 0, so both must see whole tensors. The same
paths on a GPU, through accelerate's configs, are tests/test_gpu.py."""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import _torchrun

ROOT = Path(__file__).parent.parent
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    "OMP_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",  # gloo on the CPU even where a GPU is
    "DS_ACCELERATOR": "cpu",
}


def _sharded(kind: str, model: Path, out: Path) -> dict:
    launch = _torchrun()
    for attempt in range(2):
        done = subprocess.run(
            [*launch, "tests/sharded_worker.py", kind, str(model), str(out)],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        # one retry, only for a rank killed by SIGABRT (seen once in CI: "terminate called without an active
        # exception" from a gloo thread); any other failure, or a second abort, fails the test
        if done.returncode == 0 or "(SIGABRT)" not in done.stderr or attempt:
            break
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def _check(result: dict, out: Path) -> None:
    # the first step's loss and every gradient (LoRA, and the token rows that reach the output layer through
    # our head and the input through our lookup) as without sharding: float32 sums in another order at most
    assert result["gradients"] == 29  # 28 LoRA matrices and the token rows
    assert abs(result["losses"][0] - result["reference_losses"][0]) < 1e-5
    assert result["grad_max_diff"] < 1e-5
    # the saved adapter holds the whole trained tensors (not a rank's shard, not placeholders)
    saved, live = _adapter(out / "sharded"), load_file(out / "live.safetensors")
    assert sorted(saved) == sorted(live)
    for key in saved:
        torch.testing.assert_close(saved[key], live[key], rtol=0, atol=0)


@pytest.mark.slow
def test_fsdp2_head_rows_and_saved_adapter(gemma_like, tmp_path):
    result = _sharded("fsdp2", gemma_like, tmp_path)
    _check(result, tmp_path)
    # FSDP2 changes no arithmetic: the two steps and the adapter are the unsharded run's
    assert result["losses"] == pytest.approx(result["reference_losses"], abs=1e-5)
    saved, reference = _adapter(tmp_path / "sharded"), _adapter(tmp_path / "reference")
    for key in reference:
        torch.testing.assert_close(saved[key], reference[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_zero3_head_rows_and_saved_adapter(gemma_like, tmp_path):
    # Every weight partitioned (persistence threshold 0): the head and the lookup gather what they read. The
    # update itself is DeepSpeed's (its step differs from torch's SGD on the same gradients; not ours to test).
    _check(_sharded("zero3", gemma_like, tmp_path), tmp_path)
