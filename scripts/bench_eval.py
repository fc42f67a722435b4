"""Eval speed: greedy generation of a trained model's held-out chat prompts and of its tool check, through our
generation code (instructify/evals/generation.py) and, with --llama-server, through llama.cpp's server on the same
prompt ids; the teacher-forced pass. Each run's arm goes into bench/eval.json under its name.

    python scripts/bench_eval.py [--model runs/quickstart/model] [--config configs/quickstart.yaml]
        [--arm NAME] [--max-new-tokens 128] [--batch-sizes 25,50] [--llama-server bf16]

Useful tokens are the replies' own (each stop token counted once); row-steps are the rows of every forward the
model ran (a forward pre-hook), each of which yields one token, so idle row-steps = row-steps - useful tokens: what a
batch spends on rows that have ended. Needs a finished run (its model and eval_prompts.json). Run it at another
commit (a git worktree, this script copied in) to time that commit's generation under its own --arm name.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instructify import config as config_lib  # noqa: E402
from instructify import runs  # noqa: E402
from instructify.evals import conformance, tool_calls  # noqa: E402
from instructify.evals.generation import chat_prompt_ids  # noqa: E402
from instructify.training.model import load  # noqa: E402


def scenarios(cfg, tokenizer, out_dir: Path) -> dict[str, list[dict]]:
    """The held-out chat prompts, and with eval.tools the tool check's turns (tools in the system turn)."""
    chat = json.loads((out_dir / "eval_prompts.json").read_text())[: cfg.eval.num_conversations]
    found = {"chat": chat}
    if cfg.eval.tools:
        cases = tool_calls.cases(cfg.eval.tools, cfg.eval.tools_conversations)
        found["tools"] = [tool_calls._prompt(tokenizer, c["id"], c["messages"], c["tools"]) for c in cases]
    return found


class RowSteps:
    """Rows of every forward of the model: each forward yields one new token per row."""

    def __init__(self, model):
        self.rows = self.forwards = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.rows += ids.shape[0]
            self.forwards += 1


def ours(model, tokenizer, prompts: list[dict], max_new_tokens: int, batch_size: int, counter) -> dict:
    counter.rows = counter.forwards = 0
    t0 = time.perf_counter()
    replies = conformance.generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    seconds = time.perf_counter() - t0
    useful = sum(r.tokens + r.stopped for r in replies)
    return {
        "batch_size": batch_size,
        "seconds": round(seconds, 1),
        "useful_tokens": useful,
        "useful_tokens_per_s": round(useful / seconds, 1),
        "row_steps": counter.rows,
        "idle_row_steps": counter.rows - useful,
        "idle_share": round(1 - useful / counter.rows, 3),
        "forwards": counter.forwards,
        "stop_rate": conformance.summarize(replies)["stop_rate"],
        "replies": [r.text for r in replies],
    }


def llama_server(gguf: Path, tokenizer, prompts: list[dict], max_new_tokens: int, slots: int) -> dict:
    """The same prompt ids through llama-server with `slots` parallel slots (its continuous batching) and as many
    clients, greedy, stopping on the GGUF's end-of-generation ids; the same threads as torch."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from check_engines import LLAMA_SERVER, server

    ids = [chat_prompt_ids(tokenizer, p["messages"], p.get("tools")) for p in prompts]
    context = slots * (max(map(len, ids)) + max_new_tokens + 16)
    port, threads = 8125, str(torch.get_num_threads())
    cmd = [
        str(LLAMA_SERVER),
        "-m",
        str(gguf),
        "--port",
        str(port),
        "-c",
        str(context),
        "--parallel",
        str(slots),
    ]
    cmd += ["-t", threads, "-tb", threads, "--no-webui", "--cont-batching"]

    def ask(prompt: list[int]) -> dict:
        body = {"prompt": prompt, "n_predict": max_new_tokens, "temperature": 0, "cache_prompt": False}
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/completion",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    with server(cmd, port, Path("/tmp/bench-eval-llama-server.log"), "llama-server"):
        ask(ids[0][:8])  # warm-up
        t0 = time.perf_counter()
        with ThreadPoolExecutor(slots) as pool:
            out = list(pool.map(ask, ids))
        seconds = time.perf_counter() - t0
    useful = sum(o["tokens_predicted"] for o in out)
    return {
        "slots": slots,
        "seconds": round(seconds, 1),
        "useful_tokens": useful,
        "useful_tokens_per_s": round(useful / seconds, 1),
        "stop_rate": round(sum(o["stop_type"] == "eos" for o in out) / len(out), 3),
        "replies": [o["content"] for o in out],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--model", help="model folder (default: <output_dir>/model)")
    p.add_argument("--arm", default="instructify", help="the name these figures go under in --out")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-sizes", default="25,50")
    p.add_argument(
        "--llama-server",
        metavar="DTYPE",
        help="time llama-server on the model's GGUF instead (bf16, f16, q8_0; written beside the folder if missing)",
    )
    p.add_argument("--admit-share", type=int, help="generation.ADMIT_SHARE for this arm (the lever alone)")
    p.add_argument("--out", default="bench/eval.json")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. output_dir=runs/other")
    args = p.parse_args()

    cfg = config_lib.load(args.config, args.overrides)
    out_dir = Path(cfg.output_dir)
    folder = Path(args.model or out_dir / "model")
    if not (folder / "config.json").is_file() or not (out_dir / "eval_prompts.json").is_file():
        print(
            f"error: {folder} or {out_dir / 'eval_prompts.json'} missing; run `make train` first",
            file=sys.stderr,
        )
        return 1
    if args.admit_share:
        from instructify.evals import generation

        generation.ADMIT_SHARE = args.admit_share
    model, tokenizer = load(cfg.model, path=str(folder))
    counter = RowSteps(model)
    conformance.generate(model, tokenizer, [{"id": "w", "prior_turns": 1, "messages": [
        {"role": "user", "content": "hi"}]}], 4, 1)  # fmt: skip
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    gguf = None
    if args.llama_server:
        from instructify.ship import gguf_export

        gguf = gguf_export.gguf_path(folder, args.llama_server)
        if not gguf.is_file():
            gguf_export.write_gguf(folder, args.llama_server)
    arm: dict = {}
    found = scenarios(cfg, tokenizer, out_dir)
    for name, prompts in found.items():
        arm[name] = []
        for size in sizes:
            if args.llama_server:
                run = llama_server(gguf, tokenizer, prompts, args.max_new_tokens, size)
            else:
                run = ours(model, tokenizer, prompts, args.max_new_tokens, size, counter)
            arm[name].append(run)
            print(name, json.dumps({k: v for k, v in run.items() if k != "replies"}), flush=True)
    if not args.llama_server:
        t0 = time.perf_counter()
        tf = conformance.teacher_forced(model, tokenizer, found["chat"])
        arm["teacher_forced"] = {"seconds": round(time.perf_counter() - t0, 1), **tf}
    repo = Path(__file__).resolve().parents[1]
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=repo).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") + (
        "+changes" if git("status", "--porcelain", "instructify") else ""
    )
    arm["machine"] = {"cpu": runs.cpu(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "device": model.device.type, "dtype": args.llama_server or str(model.dtype).removeprefix("torch."),
                      "commit": commit, "gguf": gguf.name if gguf else None}  # fmt: skip
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() else {}
    if "arms" not in result:  # an older file (one arm, no tool check): replaced
        result = {"arms": {}}
    counts = ", ".join(f"{name} {len(prompts)}" for name, prompts in found.items())
    result["what"] = f"greedy, max_new_tokens={args.max_new_tokens}, {folder}; prompts: {counts}"
    result["arms"][args.arm] = arm
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({args.arm})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
