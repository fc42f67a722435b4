"""Run folders and checkpoints: refusal to overwrite, run records, resume after a kill, SIGTERM, NaN."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from instructify import cli, config, runs
from instructify.training import guard, sft

ROOT = Path(__file__).parent.parent
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def test_a_previous_run_is_refused_unless_overwrite_or_resume(tmp_path):
    out = tmp_path / "run"
    runs.claim(out, overwrite=False, resume="no")  # nothing there yet
    (out / "adapter").mkdir(parents=True)
    (out / "config.yaml").write_text("x")
    (out / "samples-base.jsonl").write_text("x")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(runs.RunError, match="holds a previous run.*overwrite=true.*training.resume=auto"):
        runs.claim(out, overwrite=False, resume="no")
    runs.claim(out, overwrite=False, resume="auto")  # continuing it: left as it is
    assert (out / "adapter").is_dir()
    runs.claim(out, overwrite=True, resume="no")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # only the run's own files go


def test_resume_refuses_other_data_or_setup_and_warns_on_the_rest():
    cfg = config.load(None)
    before = runs.record(cfg, "abc")
    assert before["packages"]["transformers"] and before["config"]["lora"]["r"] == 16
    longer = runs.record(config.load(None, ["training.max_steps=500", "training.resume=auto"]), "abc")
    assert runs.check_resume(before, longer) == []
    assert runs.check_resume(before, runs.record(config.load(None, ["eval.max_new_tokens=9"]), "abc")) == [
        "resuming with changed eval.max_new_tokens"
    ]
    with pytest.raises(runs.RunError, match="the data .* differs"):
        runs.check_resume(before, runs.record(cfg, "other"))
    with pytest.raises(runs.RunError, match=r"lora.r \(16 -> 8\)"):
        runs.check_resume(before, runs.record(config.load(None, ["lora.r=8"]), "abc"))


def test_a_run_json_without_packages_or_processes_is_read_like_a_full_one():
    """Both records go through one reading (runs._recorded): an older run.json lacking a key compares as absent."""
    cfg = config.load(None)
    now = runs.record(cfg, "abc")
    old = {k: v for k, v in now.items() if k not in ("packages", "distributed")}
    assert runs.check_resume(old, now) == [
        f"resuming with other package versions: {', '.join(f'{n} None -> {v}' for n, v in now['packages'].items())}"
    ]
    with pytest.raises(runs.RunError, match="the data .* differs"):
        runs.check_resume({}, now)


def test_newest_complete_checkpoint(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False), (10, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / runs.MARKER).write_text(str(step))
    path, skipped = runs.newest_checkpoint(tmp_path)
    assert path.name == "checkpoint-4"
    assert [s.split(":")[0] for s in skipped] == ["checkpoint-10", "checkpoint-6"]
    assert runs.newest_checkpoint(tmp_path / "none") == (None, [])


@pytest.fixture
def run_config(tiny_config):
    """6 steps, a checkpoint every 2, no conformance checks (unless asked)."""

    def make(name: str, **training) -> Path:
        steps = {"max_steps": 6, "save_steps": 2, "save_total_limit": 10, **training}
        return tiny_config(name, steps, {"monitor_every": 0, "monitor_generate_every": 0})

    return make


class Losses(TrainerCallback):
    def __init__(self):
        self.by_step = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.by_step[state.global_step] = logs["loss"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_losses_and_weights(run_config):
    straight = config.load(run_config("straight"))
    losses = Losses()
    sft.train(straight, sft.setup(straight), callbacks=[losses])

    path = run_config("killed")
    killed = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "kill_during_save.py"), str(path), "4"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = Path(config.load(path).output_dir) / "checkpoints"
    assert (checkpoints / "checkpoint-2" / runs.MARKER).is_file()
    assert (checkpoints / "checkpoint-4").is_dir() and not (
        checkpoints / "checkpoint-4" / runs.MARKER
    ).exists()

    resumed_cfg = config.load(path, ["training.resume=auto"])
    resumed = Losses()
    sft.train(resumed_cfg, sft.setup(resumed_cfg), callbacks=[resumed])
    assert sorted(resumed.by_step) == [3, 4, 5, 6]  # from checkpoint-2, the cut-off checkpoint-4 skipped
    for step, loss in resumed.by_step.items():
        assert loss == pytest.approx(losses.by_step[step], rel=1e-4), step
    a = load_file(Path(straight.output_dir) / "adapter" / "adapter_model.safetensors")
    b = load_file(Path(resumed_cfg.output_dir) / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_with_its_own_code(run_config):
    path = run_config("term", max_steps=100000, save_steps=0)
    out = Path(config.load(path).output_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "instructify", "sft", "--config", str(path), "eval.monitor_every=1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "curve.jsonl").is_file() or len((out / "curve.jsonl").read_text().splitlines()) < 3:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == guard.EXIT_PREEMPTED, err[-2000:]
    assert "SIGTERM at step" in err and "training.resume=auto" in err
    (checkpoint,) = (out / "checkpoints").glob("checkpoint-*")
    assert (checkpoint / runs.MARKER).is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    assert not (out / "adapter").exists()


class PoisonAt(TrainerCallback):
    """Turns one trainable weight into NaN before step `step` (the loss of that step is NaN), keeping the model
    and a copy of every trainable weight as it was before that step."""

    def __init__(self, step: int):
        self.step = step
        self.model, self.before, self.poisoned = None, {}, None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            self.model = model
            trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            self.before = {n: p.detach().clone() for n, p in trainable}
            self.poisoned, weight = trainable[0]
            with torch.no_grad():
                weight.fill_(float("nan"))


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run_config):
    cfg = config.load(run_config("nan"))
    poison = PoisonAt(3)
    with pytest.raises(guard.Diverged, match=r"step 3 \(learning rate [0-9.e-]+\).*checkpoint-2"):
        sft.train(cfg, sft.setup(cfg), callbacks=[poison])
    # stopped before the optimizer applied step 3: every other trainable weight is exactly as before the step
    # (an applied NaN gradient would have made them NaN)
    after = dict(poison.model.named_parameters())
    assert len(poison.before) > 1
    for name, weight in poison.before.items():
        if name != poison.poisoned:
            assert torch.equal(after[name].detach(), weight), name
    checkpoints = Path(cfg.output_dir) / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2"]
    weights = load_file(checkpoints / "checkpoint-2" / "adapter_model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (Path(cfg.output_dir) / "adapter").exists()


def test_cli_refuses_a_previous_run(run_config, capsys):
    path = run_config("again")
    out = Path(config.load(path).output_dir)
    (out / "adapter").mkdir(parents=True)
    assert cli.main(["sft", "--config", str(path)]) == 1
    assert "holds a previous run" in capsys.readouterr().err


SECRET = "hf_SECRETsecretSECRETsecret0123456789"


def read_offline_run(path: Path) -> tuple[dict, list[dict], bool]:
    """(config, history rows) of an offline wandb run. wandb 0.31 ships no reader for its .wandb file: a
    LevelDB-style log (7-byte file header; 32 KiB blocks of crc32, length, type, payload) of protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pieces, payloads = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer too short for a header: padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pieces = chunk if kind in (1, 2) else pieces + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            payloads.append(pieces)
    config, history, ended = {}, [], False
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        ended |= kind == "exit"
        if kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return config, history, ended


@pytest.mark.slow
def test_wandb_offline_run_holds_the_config_and_metrics(run_config, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("WANDB_API_KEY", SECRET.replace("hf_", "wb"))
    (tmp_path / "wb").mkdir()
    cfg = config.load(
        run_config("tracked", report_to="wandb"), ["eval.monitor_every=3", "eval.monitor_conversations=2"]
    )
    sft.train(cfg, sft.setup(cfg))
    import wandb

    wandb.finish()  # what the end of the process does: the run's files are written
    (run,) = (tmp_path / "wb" / "wandb").glob("offline-run-*/*.wandb")
    # wandb's service process may still be writing when finish() returns (seen on a loaded machine: an empty
    # read); the run is complete once its exit record is in the file
    deadline = time.time() + 60
    while not (found := read_offline_run(run))[2] and time.time() < deadline:
        time.sleep(0.5)
    logged, history, ended = found
    assert ended, "the offline run has no exit record after 60 s"
    assert "instructify" in logged, sorted(logged)
    assert logged["instructify"]["lora"]["r"] == 4 and logged["data_fingerprint"]
    assert logged["run_name"] == "tracked"
    steps: dict[int, dict] = {}
    for row in history:  # the loss, the monitor's checks and the run's end are separate rows of a step
        steps.setdefault(row["train/global_step"], {}).update(row)
    assert {"train/loss", "train/grad_norm"} <= set(steps[1]) and "train/loss" in steps[6]
    # the monitor's check at step 3 is logged, and does not swallow the loss log of its step
    curve = {
        c["step"]: c for c in map(json.loads, (Path(cfg.output_dir) / "curve.jsonl").read_text().splitlines())
    }
    assert steps[3]["train/conformance/stop_token_prob"] == pytest.approx(curve[3]["stop_token_prob"])
    assert steps[6]["train/conformance/eval_loss"] == pytest.approx(curve[6]["eval_loss"])
    assert "train/loss" in steps[3]
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            text = path.read_bytes()
            assert SECRET.encode() not in text and b"SECRETsecret" not in text, path
