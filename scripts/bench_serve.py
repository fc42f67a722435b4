"""Load test of `instructify serve`: `make bench-serve`. Writes bench/serve.json.

    python scripts/bench_serve.py [--config configs/quickstart.yaml] [--model runs/quickstart/model]
        [--clients 8 32 128] [--requests 64] [--max-tokens 64] [--max-batch 8] [--label after]

Starts the server on loopback in its own process, then for each --clients count that many threads send
max(--requests, clients) chat completions in all (the held-out conversations of the run, every other one
streamed) with the official openai client, no retries. Records requests/s, latency p50/p95 (and time to the first
streamed token), completion tokens/s, 429s, and checks every reply: a non-empty string without ChatML markers,
finish_reason stop or length, usage that adds up. The results go under --label in bench/serve.json, next to the
other labels there (`before`: measured with the engine that ran whole batches, before continuous batching).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from instructify import config as config_lib  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"error: the server exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    sys.exit("error: the server did not become healthy")


def one_request(client: openai.OpenAI, messages: list[dict], max_tokens: int, stream: bool) -> dict:
    t0 = time.perf_counter()
    first = None
    if stream:
        text, reason, usage = [], None, None
        for chunk in client.chat.completions.create(
            model="m",
            messages=messages,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.choices:
                if chunk.choices[0].delta.content:
                    first = first or time.perf_counter() - t0
                    text.append(chunk.choices[0].delta.content)
                reason = chunk.choices[0].finish_reason or reason
            usage = chunk.usage or usage
        content = "".join(text)
    else:
        reply = client.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens)
        content, reason, usage = reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage
    problems = []
    if not isinstance(content, str) or not content.strip():
        problems.append("empty content")
    if "<|im_" in (content or ""):
        problems.append("ChatML marker in content")
    if reason not in ("stop", "length"):
        problems.append(f"finish_reason {reason!r}")
    if usage is None or usage.total_tokens != usage.prompt_tokens + usage.completion_tokens:
        problems.append("usage does not add up")
    elif reason == "length" and usage.completion_tokens != max_tokens:
        problems.append("length before max_tokens")
    return {
        "seconds": time.perf_counter() - t0,
        "first_token_seconds": first,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "finish_reason": reason,
        "stream": stream,
        "problems": problems,
    }


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def start_server(config: str, folder: Path, flags: list[str]) -> tuple[subprocess.Popen, str]:
    """`instructify serve` of `folder` on a free loopback port, quiet and without an API key (the bench's
    clients send none): the process and its base URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "train",
        "serve",
        "--config",
        config,
        "--model",
        str(folder),
        "--port",
        str(port),
    ]
    env = {k: v for k, v in os.environ.items() if k != "INSTRUCTIFY_API_KEY"}
    server = subprocess.Popen(
        [*cmd, *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return server, f"http://127.0.0.1:{port}"


def run_model_and_prompts(config: str, model: str | None) -> tuple[Path, list[list[dict]]] | None:
    """The run's model folder (or `model`) and its held-out prompts' messages; None, said on stderr, if missing."""
    out_dir = Path(config_lib.load(config).output_dir)
    folder = Path(model or out_dir / "model")
    prompts_file = out_dir / "eval_prompts.json"
    if not (folder / "config.json").is_file() or not prompts_file.is_file():
        print(f"error: {folder} or {prompts_file} missing; run `make train` first", file=sys.stderr)
        return None
    return folder, [p["messages"] for p in json.loads(prompts_file.read_text())]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--model", help="model folder (default: <output_dir>/model)")
    p.add_argument("--clients", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--out", default="bench/serve.json")
    p.add_argument("--label", default="after", help="the key of these results in --out")
    args = p.parse_args()

    found = run_model_and_prompts(args.config, args.model)
    if found is None:
        return 1
    folder, prompts = found
    flags = ["--max-batch", str(args.max_batch), "--max-pending", str(max(args.clients))]
    server, url = start_server(args.config, folder, flags)
    try:
        wait_healthy(url, server)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
        one_request(client, prompts[0], 4, False)  # warm-up
        runs = [
            measure(client, prompts, clients, max(args.requests, clients), args) for clients in args.clients
        ]
    finally:
        server.terminate()
        server.wait(timeout=60)
    import torch

    report = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    report = {k: v for k, v in report.items() if isinstance(v, dict) and "runs" in v}  # older layouts go
    report[args.label] = {
        "what": f"max(--requests {args.requests}, clients) requests from each number of concurrent clients, "
        f"max_tokens={args.max_tokens}, half streamed, server --max-batch {args.max_batch}",
        "model": str(folder),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report[args.label], indent=2))
    return 0 if all(r["well_formed"] == r["requests"] - r["rejected_429"] for r in runs) else 1


def measure(client: openai.OpenAI, prompts: list, clients: int, requests: int, args) -> dict:
    jobs = [(prompts[i % len(prompts)], i % 2 == 1) for i in range(requests)]

    def one(job):
        try:
            return one_request(client, job[0], args.max_tokens, job[1])
        except openai.RateLimitError:
            return None

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, jobs))
    seconds = time.perf_counter() - t0
    results = [r for r in answers if r is not None]
    latencies = [r["seconds"] for r in results]
    firsts = [r["first_token_seconds"] for r in results if r["first_token_seconds"] is not None]
    tokens = sum(r["completion_tokens"] for r in results)
    bad = [r for r in results if r["problems"]]
    return {
        "clients": clients,
        "requests": requests,
        "seconds": round(seconds, 1),
        "requests_per_s": round(len(results) / seconds, 3),
        "latency_p50_s": round(percentile(latencies, 0.5), 2),
        "latency_p95_s": round(percentile(latencies, 0.95), 2),
        "first_token_p50_s": round(percentile(firsts, 0.5), 2) if firsts else None,
        "completion_tokens_per_s": round(tokens / seconds, 1),
        "finish_reasons": {k: sum(r["finish_reason"] == k for r in results) for k in ("stop", "length")},
        "rejected_429": len(answers) - len(results),
        "well_formed": len(results) - len(bad),
        "problems": [r["problems"] for r in bad],
    }


if __name__ == "__main__":
    sys.exit(main())
