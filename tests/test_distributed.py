"""Several processes: a launch is one data-parallel job (proved from what the run records), resumes under two
processes, and a launch that cannot run here stops before anything is loaded or written."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import conversations
from safetensors.torch import load_file

from instructify import cli, config, runs
from instructify.training import distributed

ROOT = Path(__file__).parent.parent
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
# On CPU (gloo) even where a GPU is: two ranks cannot share one GPU. One thread per rank on 2 cores.
ENV = {**os.environ, "PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
for _key in [k for k in ENV if k.startswith(("ACCELERATE_", "FSDP_")) or k in ("WORLD_SIZE", "RANK")]:
    del ENV[_key]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_port()),
    ]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, gemma_like) -> Path:
    """Config files of short LoRA runs of the tiny Gemma-shaped model on all 24 test conversations."""
    root = tmp_path_factory.mktemp("distributed")
    data = root / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in conversations()))
    return root


def _config(root: Path, gemma_like: Path, name: str, **training) -> Path:
    # Every step sees all 24 conversations (2 ranks x 12, or 1 process x 12 x 2 micro-batches), so the curves
    # compare the gradient arithmetic, not the order in which two samplers deal out examples.
    config = {
        "output_dir": str(root / name),
        "model": {"name": str(gemma_like), "dtype": "float32"},
        "data": {"sources": [{"path": str(root / "chats.jsonl")}], "eval_share": 1e-9, "max_length": 256},
        "lora": {"r": 4, "alpha": 8},
        "training": {
            "max_steps": 6,
            "per_device_batch_size": 12,
            "learning_rate": 5e-3,
            "logging_steps": 1,
            "save_steps": 2,
            "save_total_limit": 10,
            **training,
        },
        "eval": {"monitor_every": 0, "monitor_generate_every": 0},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(args: list[str], expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def _losses(out: Path, step: int = 6) -> dict[int, float]:
    state = json.loads((out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def one_and_two(runs_dir, gemma_like) -> tuple[Path, Path, str]:
    """The same training as 1 process x 2 micro-batches and as 2 processes (`accelerate launch` with the ddp
    config, as `make sft ACCELERATE=configs/accelerate/ddp.yaml NPROC=2` runs it)."""
    one = _config(runs_dir, gemma_like, "one", gradient_accumulation_steps=2)
    two = _config(runs_dir, gemma_like, "two")
    _run([sys.executable, "-m", "instructify", "sft", "--config", str(one)])
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "configs/accelerate/ddp.yaml",
    ]
    launch += ["--num_processes", "2", "--main_process_port", str(_port())]
    done = _run([*launch, "-m", "instructify", "sft", "--config", str(two)])
    return runs_dir / "one", runs_dir / "two", done.stderr


@pytest.mark.slow
def test_two_processes_are_one_data_parallel_job(one_and_two):
    one, two, log = one_and_two
    # what the run recorded of its processes (each rank's own view of accelerate's state, gathered)
    record = json.loads((two / "run.json").read_text())["distributed"]
    assert (
        record["world_size"] == 2
        and record["distributed_type"] == "MULTI_CPU"
        and record["backend"] == "gloo"
    )
    assert [p["rank"] for p in record["processes"]] == [0, 1]
    assert log.count("distributed: world size 2, rank 0, MULTI_CPU (gloo)") == 1
    # which examples each rank trained on in each step: disjoint halves of all 24
    steps = [json.loads(line) for line in (two / "data_parallel.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]  # one line per step: one writer
    for s in steps:
        assert [r["rank"] for r in s["ranks"]] == [0, 1]
        first, second = (set(r["examples"]) for r in s["ranks"])
        assert len(first) == len(second) == 12 and not first & second and len(first | second) == 24
    # the same arithmetic as one process with twice the accumulation: the global batch is the same 24 rows and
    # the loss is normalised by the label tokens of all of them, so only the order of float32 sums differs
    # (measured: within 1e-6 relative); 1e-4 leaves room and still fails on any real difference (a rank's
    # gradient left out changes step 2's loss by ~1%).
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert a[6] < a[1] - 0.1  # it learns: the curves are not flat
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), (step, a, b)
    wa, wb = _adapter(one), _adapter(two)
    assert wa.keys() == wb.keys()
    for key in wa:  # Adam's normalised steps over 6 steps: 1e-4 relative, as the loss
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5)
    # only rank 0 wrote the run folder: the run's own files, each once; each rank's RNG state in a checkpoint
    run_files = ["config.yaml", "curve.jsonl", "data_parallel.jsonl", "eval_prompts.json", "rejected.jsonl"]
    run_files += ["run.json", "speed.json", "adapter", "checkpoints"]
    assert sorted(p.name for p in two.iterdir()) == sorted(run_files)
    checkpoint = two / "checkpoints" / "checkpoint-6"
    assert {p.name for p in checkpoint.glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (checkpoint / runs.MARKER).is_file()


@pytest.mark.slow
def test_two_process_run_killed_after_a_checkpoint_resumes_to_the_same_losses(
    one_and_two, runs_dir, gemma_like
):
    _, two, _ = one_and_two
    path = _config(runs_dir, gemma_like, "killed")
    killer = [*_torchrun(), str(ROOT / "tests" / "kill_during_save.py"), str(path), "4"]
    killed = subprocess.run(killer, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-2000:]
    out = runs_dir / "killed"
    assert (out / "checkpoints" / "checkpoint-2" / runs.MARKER).is_file()
    assert not (out / "checkpoints" / "checkpoint-4" / runs.MARKER).exists()

    done = _run([*_torchrun(), "-m", "instructify", "sft", "--config", str(path), "training.resume=auto"])
    assert "resume: from" in done.stderr and "checkpoint-2" in done.stderr
    resumed, straight = _losses(out), _losses(two)
    assert sorted(k for k in resumed if k > 2) == [3, 4, 5, 6]
    for step in (3, 4, 5, 6):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-4), (step, resumed, straight)
    wa, wb = _adapter(two), _adapter(out)
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5)
    steps = [json.loads(line)["step"] for line in (out / "data_parallel.jsonl").read_text().splitlines()]
    # steps 1-4 before the kill, then 3-6 from checkpoint-2 (a run started over would log 1-6 again, with the
    # same losses as the uninterrupted one: the loss comparison alone cannot tell)
    assert steps == [1, 2, 3, 4, 3, 4, 5, 6]


def test_resume_under_another_number_of_processes_is_refused():
    c = config.load(None)
    one = {"rank": 0, "local_rank": 0, "host": "h", "device": "cpu", "backend": None}
    before = runs.record(c, "abc", [{**one, "world_size": 2, "distributed_type": "MULTI_CPU"}])
    after = runs.record(c, "abc", [{**one, "world_size": 1, "distributed_type": "NO"}])
    with pytest.raises(runs.RunError, match=r"trained by 2 process\(es\), this launch has 1"):
        runs.check_resume(before, after)


@pytest.mark.parametrize(
    "env, cuda, deepspeed, says",
    [
        (
            {"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "2"},
            0,
            False,
            "FSDP was asked.*no CUDA GPU.*ddp.yaml",
        ),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, 0, True, "DeepSpeed ZeRO was asked.*no CUDA GPU"),
        (
            {"ACCELERATE_USE_DEEPSPEED": "true"},
            1,
            False,
            r"deepspeed package is not installed.*\.\[deepspeed\]",
        ),
        ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}, 2, False, "4 processes on this machine.*2 CUDA GPU"),
    ],
)
def test_a_launch_that_cannot_run_here_is_named(env, cuda, deepspeed, says):
    assert re.search(says, distributed.problem(env, cuda, deepspeed) or "")


@pytest.mark.parametrize(
    "env, cuda, deepspeed",
    [
        ({}, 0, False),
        ({"WORLD_SIZE": "2"}, 0, False),  # data parallel on CPU: gloo
        ({"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}, 8, False),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, 1, True),
    ],
)
def test_a_launch_that_can_run_here_passes(env, cuda, deepspeed):
    assert distributed.problem(env, cuda, deepspeed) is None


def test_fsdp_on_a_cpu_machine_stops_before_anything_is_loaded_or_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"output_dir": str(tmp_path / "run"), "model": {"name": "/nonexistent"}})
    )
    assert cli.main(["sft", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: FSDP was asked") and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # model.name does not even exist: nothing was loaded


@pytest.mark.parametrize(
    "name, nproc, code, says",
    [
        ("fsdp2", "2", 1, "FSDP was asked"),
        ("zero3", "2", 1, "DeepSpeed ZeRO was asked"),
        ("single", "2", 2, "runs one process; NPROC=2 would be ignored"),
        ("ddp", "2", 0, ""),
    ],
)
def test_the_makefile_check_of_an_accelerate_config(name, nproc, code, says, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.main([str(ROOT / "configs" / "accelerate" / f"{name}.yaml"), nproc]) == code
    assert says in capsys.readouterr().err
