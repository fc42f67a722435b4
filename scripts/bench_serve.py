"""Load test of `instructify serve`: `make bench-serve`. Writes bench/serve.json.

    python scripts/bench_serve.py [--config configs/quickstart.yaml] [--model runs/quickstart/model]
        [--clients 8 32 128] [--requests 64] [--max-tokens 64] [--max-batch 8]
        [--arm NAME=SOURCE ...] [--burst 120]

Each arm is a server: SOURCE a checkout of this repository whose `instructify serve` runs (default: this one,
as `fastapi + uvicorn`; `git worktree add /tmp/old d38f806` gives the `http.server` one before it). For each arm
in turn the server starts on loopback in its own process; for each --clients count that many threads send
max(--requests, clients) chat completions (the run's held-out conversations, every other one streamed), first with
the official openai client (one client, its kept-alive connections), then with plain urllib (a new connection per
request), no retries. Recorded: requests/s, latency p50/p95, time to the first streamed token, completion tokens/s,
429s, connection errors, and every reply checked (non-empty text without ChatML markers, finish_reason stop or
length, usage that adds up). Then a burst: --burst plain requests at once against --max-pending 16, each of which
must get an HTTP answer (200, or 429/503 with Retry-After), none reset, while /health is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from instructify import config as config_lib  # noqa: E402
from scripts.machine import cpu_flags  # noqa: E402


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
    return _checked(content, reason, usage, max_tokens) | {
        "seconds": time.perf_counter() - t0,
        "first_token_seconds": first,
        "stream": stream,
    }


def _checked(content, reason, usage, max_tokens: int) -> dict:
    """What is wrong with a reply, if anything, and its finish reason and completion tokens."""
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
        "completion_tokens": usage.completion_tokens if usage else 0,
        "finish_reason": reason,
        "problems": problems,
    }


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def start_server(
    config: str, folder: Path, flags: list[str], source: Path = ROOT
) -> tuple[subprocess.Popen, str]:
    """`instructify serve` of `folder` from the checkout `source`, on a free loopback port, quiet and without an
    API key (the bench's clients send none): the process and its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "instructify", "serve", "--config", str(ROOT / config)]
    cmd += ["--model", str(folder.resolve()), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "INSTRUCTIFY_API_KEY"} | {"PYTHONPATH": str(source)}
    server = subprocess.Popen(
        [*cmd, *flags], cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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


def urllib_request(url: str, messages: list[dict], max_tokens: int, stream: bool) -> dict | None:
    """One request on a new connection, as scripts and curl send them; the same checks as one_request. None if
    the server answered 429."""
    body = {"model": "m", "messages": messages, "max_tokens": max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    t0, first = time.perf_counter(), None
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            if not stream:
                reply = json.loads(response.read())
                choice, usage = reply["choices"][0], reply["usage"]
                content, reason = choice["message"]["content"], choice["finish_reason"]
            else:
                text, reason, usage = [], None, None
                for line in response:
                    if not line.startswith(b"data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    for choice in chunk.get("choices", []):
                        if choice["delta"].get("content"):
                            first = first or time.perf_counter() - t0
                            text.append(choice["delta"]["content"])
                        reason = choice["finish_reason"] or reason
                    usage = chunk.get("usage") or usage
                content = "".join(text)
    except urllib.error.HTTPError as error:
        if error.code == 429:
            return None
        raise
    usage = openai.types.CompletionUsage(**usage) if usage else None
    return _checked(content, reason, usage, max_tokens) | {
        "seconds": time.perf_counter() - t0,
        "first_token_seconds": first,
        "stream": stream,
    }


def burst(url: str, messages: list[dict], n: int) -> dict:
    """n plain requests at once, no retries: how many got which HTTP answer, how many none (a reset, a timeout),
    and the slowest /health meanwhile."""
    start = threading.Barrier(n + 1)
    body = json.dumps({"model": "m", "messages": messages, "max_tokens": 16}).encode()

    def one(_):
        start.wait()
        request = urllib.request.Request(
            f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
                return response.status, True
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Retry-After") is not None
        except OSError as error:
            return type(error).__name__, False

    with ThreadPoolExecutor(n) as pool:
        answers = pool.map(one, range(n))
        start.wait()
        slowest = 0.0
        for _ in range(10):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"{url}/health", timeout=30) as r:
                r.read()
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.1)
        answers = list(answers)
    counts: dict[str, int] = {}
    for status, _ in answers:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return {
        "requests": n,
        "answers": counts,
        "http_answers": sum(isinstance(s, int) for s, _ in answers),
        "refusals_without_retry_after": sum(s in (429, 503) and not ok for s, ok in answers),
        "slowest_health_s": round(slowest, 3),
    }


def run_arm(name: str, source: Path, folder: Path, prompts: list, args) -> dict:
    flags = ["--max-batch", str(args.max_batch), "--max-pending", str(max(args.clients))]
    server, url = start_server(args.config, folder, flags, source)
    try:
        wait_healthy(url, server)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
        one_request(client, prompts[0], 4, False)  # warm-up
        runs = []
        for clients in args.clients:
            for kind in ("openai", "urllib"):
                send = (
                    (lambda m, s: one_request(client, m, args.max_tokens, s))
                    if kind == "openai"
                    else (lambda m, s: urllib_request(url, m, args.max_tokens, s))
                )
                runs.append({"client": kind} | measure(send, prompts, clients, max(args.requests, clients)))
                print(name, json.dumps(runs[-1]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    flags = ["--max-batch", str(args.max_batch), "--max-pending", "16"]
    server, url = start_server(args.config, folder, flags, source)
    try:
        wait_healthy(url, server)
        urllib_request(url, prompts[0], 4, False)  # warm-up
        shot = burst(url, prompts[0], args.burst)
        print(name, "burst", json.dumps(shot), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"source": str(source), "runs": runs, "burst": shot}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--model", help="model folder (default: <output_dir>/model)")
    p.add_argument("--clients", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--burst", type=int, default=120)
    p.add_argument(
        "--arm", action="append", metavar="NAME=SOURCE", help="a server to measure (default: this checkout)"
    )
    p.add_argument("--out", default="bench/serve.json")
    args = p.parse_args()

    found = run_model_and_prompts(args.config, args.model)
    if found is None:
        return 1
    folder, prompts = found
    arms = [a.split("=", 1) for a in args.arm or [f"fastapi + uvicorn={ROOT}"]]
    results = {name: run_arm(name, Path(source), folder, prompts, args) for name, source in arms}
    import torch

    report = {
        "what": f"max(--requests {args.requests}, clients) requests from each number of concurrent clients, "
        f"max_tokens={args.max_tokens}, half streamed, server --max-batch {args.max_batch}; then a burst of "
        f"{args.burst} plain requests against --max-pending 16",
        "model": str(folder),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {cpu_flags()}",
        "arms": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    ok = all(
        r["well_formed"] == r["requests"] - r["rejected_429"] and not r["errors"]
        for arm in results.values()
        for r in arm["runs"]
    )
    return 0 if ok and all(a["burst"]["http_answers"] == args.burst for a in results.values()) else 1


def measure(send, prompts: list, clients: int, requests: int) -> dict:
    jobs = [(prompts[i % len(prompts)], i % 2 == 1) for i in range(requests)]

    def one(job):
        try:
            return send(*job)
        except openai.RateLimitError:
            return None
        except Exception as error:  # a reset, a timeout: no HTTP answer
            return {"error": f"{type(error).__name__}: {error}"}

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, jobs))
    seconds = time.perf_counter() - t0
    errors = [a["error"] for a in answers if a is not None and "error" in a]
    results = [r for r in answers if r is not None and "error" not in r]
    latencies = [r["seconds"] for r in results]
    firsts = [r["first_token_seconds"] for r in results if r["first_token_seconds"] is not None]
    tokens = sum(r["completion_tokens"] for r in results)
    bad = [r for r in results if r["problems"]]
    return {
        "clients": clients,
        "requests": requests,
        "seconds": round(seconds, 1),
        "requests_per_s": round(len(results) / seconds, 3),
        "latency_p50_s": round(percentile(latencies, 0.5), 2) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 2) if latencies else None,
        "first_token_p50_s": round(percentile(firsts, 0.5), 2) if firsts else None,
        "completion_tokens_per_s": round(tokens / seconds, 1),
        "finish_reasons": {k: sum(r["finish_reason"] == k for r in results) for k in ("stop", "length")},
        "rejected_429": sum(a is None for a in answers),
        "errors": errors[:5],
        "error_count": len(errors),
        "well_formed": len(results) - len(bad),
        "problems": [r["problems"] for r in bad],
    }


if __name__ == "__main__":
    sys.exit(main())
