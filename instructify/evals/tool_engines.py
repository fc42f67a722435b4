"""The tool check and BFCL through an OpenAI-compatible server (llama.cpp's llama-server, vLLM, `instructify
serve`): what an `openai` client receives, judged as the in-process check judges a reply.

Each case goes out as OpenAI's request (`tools`, earlier calls with JSON-string arguments, `tool` messages); the
engine's own parser turns the model's text into `content` and `tool_calls`, which are written back in our format
(instructify/chat/tools.py `reply_text`) and judged by instructify/evals/tool_calls.py. A reply counts as stopped
when the engine says it stopped by itself (`finish_reason` stop or tool_calls). So a call the engine could not parse
stays in the text and fails the check, as it would fail the client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from instructify.chat import tools as chat_tools
from instructify.evals import bfcl, tool_calls


@dataclass
class EngineReply:
    text: str
    stopped: bool
    calls: list[dict]  # as the client received them: {"name", "arguments"} with the arguments decoded
    error: str | None = None


def api_messages(messages: list[dict]) -> list[dict]:
    """Messages as OpenAI's API takes them: call arguments as JSON strings, content never null."""
    out = []
    for m in messages:
        m = {**m, "content": m.get("content") or ""}
        if m.get("tool_calls"):
            m["tool_calls"] = [
                {
                    "id": c.get("id") or f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else chat_tools.dumps(args),
                    },
                }
                for i, c in enumerate(m["tool_calls"], 1)
                for name, args in [chat_tools.call_parts(c)]
            ]
        out.append(m)
    return out


def ask(client, model: str, messages: list[dict], tools: list[dict], max_new_tokens: int) -> EngineReply:
    """One greedy request; an engine error (a reply it could not parse, say) is an answer that fails the check."""
    try:
        r = client.chat.completions.create(
            model=model,
            messages=api_messages(messages),
            tools=tools,
            max_tokens=max_new_tokens,
            temperature=0.0,
        )
    except Exception as e:  # noqa: BLE001 - the client's error is the verdict, kept in the record
        return EngineReply("", False, [], f"{type(e).__name__}: {e}"[:300])
    choice = r.choices[0]
    calls, sent = [], []
    for c in choice.message.tool_calls or []:
        sent.append({"function": {"name": c.function.name, "arguments": c.function.arguments}})
        try:
            calls.append({"name": c.function.name, "arguments": json.loads(c.function.arguments)})
        except (TypeError, json.JSONDecodeError):
            calls.append({"name": c.function.name, "arguments": None})
    text = chat_tools.reply_text({"content": choice.message.content or "", "tool_calls": sent})
    return EngineReply(text, choice.finish_reason in ("stop", "tool_calls"), calls)


def _all(fn: Callable, items: list, workers: int) -> list:
    with ThreadPoolExecutor(workers) as pool:  # servers batch concurrent requests
        return list(pool.map(fn, items))


def check(client, model: str, path: str, limit: int, max_new_tokens: int, workers: int = 8) -> dict:
    """The held-out tool check (tool_calls.check) through the server."""
    checked = tool_calls.cases(path, limit)
    replies = _all(lambda c: ask(client, model, c["messages"], c["tools"], max_new_tokens), checked, workers)
    verdicts = [tool_calls.judge(c, r.text, r.stopped) for c, r in zip(checked, replies)]
    for v, r in zip(verdicts, replies):
        if r.error:
            v["problems"].insert(0, f"engine error; {r.error}")
            v.update(conforms=False, right=False)
    result = tool_calls.score(checked, verdicts, replies)
    result["engine_errors"] = sum(r.error is not None for r in replies)
    return result


def run_bfcl(
    client, model: str, per_category: int, max_new_tokens: int, seed: int = 0, workers: int = 8
) -> dict:
    """BFCL's five AST categories (tool_calls.run_bfcl) through the server: the calls the client received."""
    items = [i for cat in bfcl.CATEGORIES for i in bfcl.load(cat, per_category, seed)]
    replies = _all(lambda i: ask(client, model, i.messages, i.tools, max_new_tokens), items, workers)
    result = bfcl.score(items, [r.calls for r in replies])
    result["engine_errors"] = sum(r.error is not None for r in replies)
    result["replies"] = [
        {"id": i.id, "reply": r.text, "stopped": r.stopped, **({"error": r.error} if r.error else {})}
        for i, r in zip(items, replies)
    ]
    return result
