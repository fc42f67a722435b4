"""Soak test of `instructify serve`: a bounded run of mixed traffic, then the server's memory slope.

    python scripts/soak_serve.py [--config configs/quickstart.yaml] [--model runs/quickstart/model]
        [--seconds 300] [--clients 8] [--max-tokens 64] [--max-batch 8] [--out bench/soak.json]

Starts the server on loopback in its own process; --clients threads, each sending its next request as soon as the
last one ended (so the load is the rate the server sustains), mix plain requests (half), streamed ones (a third)
and streams they hang up on after the first chunk (the rest), for --seconds. Every reply is checked (non-empty,
no ChatML markers, finish_reason stop or length, usage that adds up); any other answer than a reply or a 429 is
an error. The server's resident memory is sampled every 5 s; its slope after the first minute (warm-up) and over
the second half of the run is reported in MB per minute. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.request
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_serve import (  # noqa: E402
    one_request,
    percentile,
    run_model_and_prompts,
    start_server,
    wait_healthy,
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) in MB per minute."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return 60 * sum((t - mean_t) * (m - mean_m) for t, m in samples) / var if var else 0.0


def hang_up(client: openai.OpenAI, messages: list[dict], max_tokens: int) -> dict:
    """A streamed request whose client leaves after the first chunk with content."""
    stream = client.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens, stream=True)
    got = False
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got = True
            break
    stream.close()
    return {"kind": "cancelled", "problems": [] if got else ["no chunk before hanging up"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--model", help="model folder (default: <output_dir>/model)")
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--out", default="bench/soak.json")
    args = p.parse_args()

    found = run_model_and_prompts(args.config, args.model)
    if found is None:
        return 1
    folder, prompts = found
    server, url = start_server(args.config, folder, ["--max-batch", str(args.max_batch)])
    results: list[dict] = []
    memory: list[tuple[float, float]] = []
    try:
        wait_healthy(url, server)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)
        t0 = time.monotonic()
        end = t0 + args.seconds

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < end:
                messages = rng.choice(prompts)
                roll = rng.random()
                try:
                    if roll < 0.5:
                        r = one_request(client, messages, args.max_tokens, False) | {"kind": "plain"}
                    elif roll < 0.83:
                        r = one_request(client, messages, args.max_tokens, True) | {"kind": "streamed"}
                    else:
                        r = hang_up(client, messages, args.max_tokens)
                except openai.RateLimitError:
                    r = {"kind": "429", "problems": []}
                except Exception as error:  # anything else is a failure of the server
                    r = {"kind": "error", "problems": [f"{type(error).__name__}: {error}"]}
                results.append(r)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            memory.append((time.monotonic() - t0, rss_mb(server.pid)))
            time.sleep(5)
        seconds = time.monotonic() - t0
        time.sleep(1)  # the last hung-up streams are seen gone at the next step
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    finally:
        server.terminate()
        code = server.wait(timeout=120)

    after_warmup = [(t, m) for t, m in memory if t >= 60] or memory
    last_half = [(t, m) for t, m in memory if t >= seconds / 2] or memory
    latencies = [r["seconds"] for r in results if "seconds" in r]
    bad = [r for r in results if r["problems"]]
    report = {
        "what": f"{args.seconds:g} s of {args.clients} closed-loop clients (half plain, a third streamed, the rest "
        f"hang up after the first chunk), max_tokens={args.max_tokens}, server --max-batch {args.max_batch}",
        "model": str(folder),
        "machine": f"{os.cpu_count()} cores",
        "seconds": round(seconds, 1),
        "requests": {
            k: sum(r["kind"] == k for r in results) for k in ("plain", "streamed", "cancelled", "429")
        },
        "errors": sum(r["kind"] == "error" for r in results),
        "requests_per_s": round(len(results) / seconds, 3),
        "latency_p50_s": round(percentile(latencies, 0.5), 2) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 2) if latencies else None,
        "well_formed": len(results) - len(bad),
        "problems": sorted({p for r in bad for p in r["problems"]})[:20],
        "rss_mb_first_last": [round(memory[0][1]), round(memory[-1][1])] if memory else None,
        "rss_mb_after_warmup_min_max": [
            round(min(m for _, m in after_warmup)),
            round(max(m for _, m in after_warmup)),
        ]
        if memory
        else None,
        "rss_slope_mb_per_min_after_warmup": round(slope_per_minute(after_warmup), 2)
        if len(after_warmup) > 1
        else None,
        "rss_slope_mb_per_min_last_half": round(slope_per_minute(last_half), 2)
        if len(last_half) > 1
        else None,
        "idle_after": "instructify_requests_waiting 0" in metrics
        and "instructify_batch_running 0" in metrics,
        "server_exit_code_on_sigterm": code,
        "rss_mb_samples": [[round(t), round(m)] for t, m in memory],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mb_samples"}, indent=2))
    return 0 if not bad and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
