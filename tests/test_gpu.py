"""Every accelerate config on one CUDA GPU: trains, checkpoints, resumes to the same losses, saves an adapter and
token rows equal to the `single` run's, and exports a folder `doctor` passes. Skipped without CUDA (and per
config without deepspeed); scripts/gpu_check.sh runs it on the GPU machine and writes the table.

At one process FSDP2 still shards and gathers (a world of one), and ZeRO-3 partitions every weight above its
persistence threshold (1e5 elements): the models here are the tiny test shapes made wider (320) so that the
embedding, the tied output layer and the MLPs are partitioned. All runs of one kind start together (one GPU, a
process each) so that the whole check fits in a couple of minutes.

Tolerances against `single`: every config trains with bf16 (the accelerate configs' mixed_precision), but single
and ddp autocast over float32 weights, FSDP2 casts its gathered parameters to bf16 and DeepSpeed keeps bf16
weights with float32 master copies (and saves a 16-bit adapter). So: losses within 2% of single's at every step,
adapter and token-row tensors within 5% (relative Frobenius norm of the difference), after 4 steps at lr 5e-3;
ddp must match single to 1e-4 (the same arithmetic). A resumed run repeats its own full run's losses within 1e-3.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_SHAPE, _save, _tokenizer, conversations
from safetensors.torch import load_file
from test_distributed import _port

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)"
)

ROOT = Path(__file__).parent.parent
CONFIGS = ("single", "ddp", "fsdp2", "zero2", "zero3")
MODELS = ("gemma", "smol")
STEPS, SAVE_AT = 4, 2
TOLERANCE = {"loss": 2e-2, "tensor": 5e-2, "ddp": 1e-4, "resume": 1e-3}
WIDE = {**TINY_SHAPE, "hidden_size": 320, "intermediate_size": 640}
RESULTS = Path(os.environ.get("GPU_RESULTS", ROOT / "runs" / "gpu" / "configs.json"))
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))},
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
}


def _wide_models(root: Path) -> dict[str, Path]:
    """conftest's tiny Gemma-shaped (new ChatML tokens, tied embeddings) and SmolLM2-shaped (ChatML reused)
    bases, 320 wide."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = _tokenizer(["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>", "<eos>", "<pad>", "<unk>")
    gemma = Gemma3TextConfig(
        vocab_size=len(tok),
        **WIDE,
        head_dim=32,
        max_position_embeddings=512,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    paths = {"gemma": _save(Gemma3ForCausalLM(gemma), tok, root / "gemma")}
    torch.manual_seed(0)
    tok = _tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"], None, "<|endoftext|>", None, "<unk>"
    )
    smol = LlamaConfig(
        vocab_size=len(tok),
        **WIDE,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
    paths["smol"] = _save(LlamaForCausalLM(smol), tok, root / "smol")
    return paths


def _config(root: Path, model: Path, name: str) -> Path:
    config = {
        "output_dir": str(root / name),
        "model": {"name": str(model), "dtype": "float32"},
        "data": {"sources": [{"path": str(root / "chats.jsonl")}], "eval_share": 0.2, "max_length": 64},
        "lora": {"r": 4, "alpha": 8},
        "training": {
            "max_steps": STEPS,
            "per_device_batch_size": 4,
            "learning_rate": 5e-3,
            "logging_steps": 1,
            "save_steps": SAVE_AT,
            "save_total_limit": 10,
        },
        "eval": {"monitor_every": 0, "monitor_generate_every": 0},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(accelerate: str, config: Path, log: Path, *overrides: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        f"configs/accelerate/{accelerate}.yaml",
    ]
    cmd += ["--num_processes", "1", "--main_process_port", str(_port())]
    cmd += ["-m", "instructify", "sft", "--config", str(config), *overrides]
    # a data cache of its own (shared with its resume): runs started together would replace one another's entry
    env = {**ENV, "INSTRUCTIFY_CACHE": str(config.with_suffix(".cache"))}
    started = time.perf_counter()
    with log.open("w") as fh:
        code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=900)
    tail = log.read_text()[-2500:] if code else ""
    return {"exit": code, "seconds": round(time.perf_counter() - started, 1), "log_tail": tail}


def _losses(out: Path) -> dict[int, float]:
    state = json.loads((out / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp(min=1e-12)).item()


def _export(config: Path) -> dict:
    from instructify import config as config_lib
    from instructify.ship import export

    try:
        export.export(config_lib.load(str(config)))  # raises if doctor finds a problem
        return {"ok": True}
    except Exception as e:  # recorded per config; the test below fails on it
        return {"ok": False, "error": f"{type(e).__name__}: {e}"[-2000:]}


def _available(accelerate: str) -> str | None:
    if accelerate.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        return "deepspeed is not installed"
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every (config, model): a full run (checkpoint at step 2), then from that checkpoint a resumed run, then the
    export; each kind of run all at once. Measurements go to GPU_RESULTS as they are made."""
    root = tmp_path_factory.mktemp("gpu")
    (root / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in conversations()))
    models = _wide_models(root)
    todo = [(c, m) for c in CONFIGS for m in MODELS if not _available(c)]
    results = {f"{c}/{m}": {"skipped": _available(c)} for c in CONFIGS for m in MODELS if _available(c)}
    configs = {(c, m): _config(root, models[m], f"{c}-{m}") for c, m in todo}
    with ThreadPoolExecutor(len(todo)) as pool:
        full = dict(
            zip(todo, pool.map(lambda cm: _launch(cm[0], configs[cm], root / f"{cm[0]}-{cm[1]}.log"), todo))
        )
    resumable = []
    for c, m in todo:
        out, resumed = root / f"{c}-{m}", root / f"{c}-{m}-resumed"
        results[f"{c}/{m}"] = {"run": full[(c, m)]}
        if full[(c, m)]["exit"] == 0:
            results[f"{c}/{m}"]["losses"] = _losses(out)
            shutil.copytree(out, resumed, ignore=shutil.ignore_patterns(f"checkpoint-{STEPS}", "adapter"))
            resumable.append((c, m))
    _write(results)  # so far, in case the resumes outlast gpu_check.sh's time limit
    with ThreadPoolExecutor(max(1, len(resumable))) as pool:
        again = pool.map(
            lambda cm: _launch(
                cm[0],
                configs[cm],
                root / f"{cm[0]}-{cm[1]}-resumed.log",
                "training.resume=auto",
                f"output_dir={root / f'{cm[0]}-{cm[1]}-resumed'}",
            ),
            resumable,
        )
        for cm, result in zip(resumable, again):
            results[f"{cm[0]}/{cm[1]}"]["resume"] = result
    for c, m in todo:
        r, out = results[f"{c}/{m}"], root / f"{c}-{m}"
        if r["run"]["exit"] == 0:
            r["adapter"] = {
                k: v.float().cpu()
                for k, v in load_file(out / "adapter" / "adapter_model.safetensors").items()
            }
            r["export"] = _export(configs[(c, m)])
        if r.get("resume", {}).get("exit") == 0:
            resumed = root / f"{c}-{m}-resumed"
            r["resumed_losses"] = _losses(resumed)
            speed = json.loads((resumed / "speed.json").read_text())
            r["resumed_steps_run"] = speed["steps_timed"] + speed["warmup_steps"]  # by this process
    for c, m in todo:  # against single's
        r, base = results[f"{c}/{m}"], results.get(f"single/{m}", {})
        if "adapter" in r and "adapter" in base and sorted(r["adapter"]) == sorted(base["adapter"]):
            diffs = {k: _relative(r["adapter"][k], base["adapter"][k]) for k in base["adapter"]}
            rows = [v for k, v in diffs.items() if "trainable_tokens" in k]
            r["vs_single"] = {
                "loss_max_rel": max(
                    abs(r["losses"][s] - base["losses"][s]) / abs(base["losses"][s]) for s in base["losses"]
                ),
                "lora_max_rel": max(v for k, v in diffs.items() if "lora_" in k),
                "rows_max_rel": max(rows) if rows else None,
            }
        elif "adapter" in r and "adapter" in base:
            r["vs_single"] = {"keys_differ": sorted(set(r["adapter"]) ^ set(base["adapter"]))}
    _write(results)
    return results


def _write(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    shown = {k: {f: v for f, v in r.items() if f != "adapter"} for k, r in results.items()}
    RESULTS.write_text(json.dumps({"tolerance": TOLERANCE, "runs": shown}, indent=2, default=str) + "\n")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("accelerate", CONFIGS)
def test_config(runs, accelerate, model):
    if _available(accelerate):
        pytest.skip(_available(accelerate))
    r = runs[f"{accelerate}/{model}"]
    assert r["run"]["exit"] == 0, r["run"]["log_tail"]
    assert sorted(r["losses"]) == list(range(1, STEPS + 1))
    # resumed from checkpoint-2 (so it ran steps 3 and 4 only): they repeat the full run's
    assert r.get("resume", {}).get("exit") == 0, r.get("resume", {}).get("log_tail")
    assert r["resumed_steps_run"] == STEPS - SAVE_AT
    for step in range(SAVE_AT + 1, STEPS + 1):
        assert abs(r["resumed_losses"][step] - r["losses"][step]) <= TOLERANCE["resume"] * abs(
            r["losses"][step]
        )
    assert r["export"]["ok"], r["export"].get("error")
    if model == "gemma":  # its ChatML tokens are new: their rows are in the adapter
        assert any("trainable_tokens" in k for k in r["adapter"])
    if accelerate == "single":
        return
    vs = r["vs_single"]
    assert "keys_differ" not in vs, vs
    tol = TOLERANCE["ddp"] if accelerate == "ddp" else None
    assert vs["loss_max_rel"] <= (tol or TOLERANCE["loss"]), vs
    assert vs["lora_max_rel"] <= (tol or TOLERANCE["tensor"]), vs
    if vs["rows_max_rel"] is not None:
        assert vs["rows_max_rel"] <= (tol or TOLERANCE["tensor"]), vs
