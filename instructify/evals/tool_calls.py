"""The tool-call check: held-out tool conversations and BFCL, generated and judged by program.

Held-out conversations (eval.tools, e.g. data/tools/heldout.jsonl, whose functions are in no training row): every
assistant turn is a case, its prompt the conversation before it. A reply conforms when it ended on `<|im_end|>`,
parses as text or calls (instructify/chat/tools.py), each call names an offered function with arguments that meet
its schema, nothing follows the last `</tool_call>` and no `<tool_response>` is invented. It is right when it makes
the gold calls (any order; numbers compared by value, strings by case) or, where text is due (no tool fits, a value
is missing, the tool's result is back), makes no call.

BFCL (eval.bfcl items per category): the same generation, the calls scored by instructify/evals/bfcl.py.

A model whose own template ignores `tools` (SmolLM2's) is shown them the only way it can see them: the tools block
written into its system turn (chat_tools.flatten), as its users would have to.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from instructify.chat import tools as chat_tools
from instructify.evals import bfcl, conformance


def cases(path: str | Path, limit: int) -> list[dict]:
    """One case per assistant turn of the first `limit` conversations: {id, kind, tools, messages, gold}."""
    from instructify.data import records

    out = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines[:limit], 1):
        try:
            row = json.loads(line)
            tools, messages = row["tools"], row["messages"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise records.DataError(f"{path}: row {n} is not a tool conversation ({e}); each line needs "
                                    "tools and messages") from None  # fmt: skip
        for i, m in enumerate(messages):
            if m.get("role") == "assistant":
                calls = [
                    dict(zip(("name", "arguments"), chat_tools.call_parts(c)))
                    for c in m.get("tool_calls") or []
                ]
                for c in calls:
                    if isinstance(c["arguments"], str):
                        c["arguments"] = json.loads(c["arguments"])
                out.append({"id": f"{row.get('id', n)}:{i}", "kind": row.get("kind", "other"), "tools": tools,
                            "messages": messages[:i], "gold": calls})  # fmt: skip
    return out


def _prompt(tokenizer, case_id: str, messages: list[dict], tools: list[dict]) -> dict:
    if "tools" in (tokenizer.chat_template or ""):
        return {"id": case_id, "prior_turns": 1, "messages": messages, "tools": tools, "offered": tools}
    return {
        "id": case_id,
        "prior_turns": 1,
        "messages": chat_tools.flatten(messages, tools),
        "offered": tools,
    }


def _canon(value: object) -> object:
    """A value as calls are compared: 3 and 3.0 alike, strings by case and outer spaces."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return value.strip().casefold()
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in sorted(value.items())}
    return value


def same_calls(calls: list[dict], gold: list[dict]) -> bool:
    """Whether `calls` are the gold calls, in any order."""
    key = lambda c: json.dumps([c["name"], _canon(c["arguments"])], sort_keys=True)  # noqa: E731
    return sorted(map(key, calls)) == sorted(map(key, gold))


def judge(case: dict, text: str, stopped: bool) -> dict:
    """The verdicts on one reply (its text up to, not including, the stop token)."""
    reply = chat_tools.parse_reply(text)
    invalid = [
        p for c in reply.calls if (p := chat_tools.call_problem(c["name"], c["arguments"], case["tools"]))
    ]
    problems = reply.problems + invalid
    if not stopped:
        problems.append("did not stop")
    elif reply.calls and not chat_tools.ends_after_calls(text):
        problems.append("text after the last call")
    called = bool(reply.calls) or chat_tools.CALL_OPEN in text
    due = bool(case["gold"])
    right = stopped and (same_calls(reply.calls, case["gold"]) and not problems if due else not called)
    return {"conforms": not problems, "problems": problems, "called": called, "due": due, "right": right}


def _share(k: int, n: int) -> float:
    return k / n if n else 0.0


def score(checked: list[dict], verdicts: list[dict], replies: list) -> dict:
    """Shares over all cases, where calls are due, where text is, and right by kind; every reply kept."""
    n = len(verdicts)
    due = [v for v in verdicts if v["due"]]
    text = [v for v in verdicts if not v["due"]]
    kinds = sorted({c["kind"] for c in checked})
    by_kind = {}
    for kind in kinds:
        ks = [v for c, v in zip(checked, verdicts) if c["kind"] == kind]
        by_kind[kind] = {"n": len(ks), "right": sum(v["right"] for v in ks)}
    conform = sum(v["conforms"] for v in verdicts)
    return {
        "n": n,
        "conforms": _share(conform, n),
        "conforms_ci95": conformance.wilson(conform, n),
        "stopped": _share(sum(r.stopped for r in replies), n),
        "right": _share(sum(v["right"] for v in verdicts), n),
        "calls_due": len(due),
        "right_calls": _share(sum(v["right"] for v in due), len(due)),
        "missed_calls": _share(sum(not v["called"] for v in due), len(due)),
        "text_due": len(text),
        "false_calls": _share(sum(v["called"] for v in text), len(text)),
        "by_kind": by_kind,
        "problems": dict(Counter(p.split(";")[0] for v in verdicts for p in v["problems"]).most_common()),
        "replies": [
            {"id": c["id"], "kind": c["kind"], "reply": r.text, "stopped": r.stopped, **v}
            for c, r, v in zip(checked, replies, verdicts)
        ],
    }


def check(
    model,
    tokenizer,
    path: str | Path,
    limit: int,
    max_new_tokens: int,
    batch_size: int,
    constrained: bool = False,
) -> dict:
    """The held-out tool check of one model, greedy; `constrained`: its calls held to the offered schemas as they
    are generated (instructify/evals/tool_grammar.py)."""
    checked = cases(path, limit)
    prompts = [_prompt(tokenizer, c["id"], c["messages"], c["tools"]) for c in checked]
    fits = [_fits(model, tokenizer, p, max_new_tokens) for p in prompts]
    checked = [c for c, f in zip(checked, fits) if f]
    prompts = [p for p, f in zip(prompts, fits) if f]
    replies = conformance.generate(
        model, tokenizer, prompts, max_new_tokens, batch_size, constrained=constrained
    )
    verdicts = [judge(c, r.text, r.stopped) for c, r in zip(checked, replies)]
    return score(checked, verdicts, replies) | {"too_long": fits.count(False)}


def _fits(model, tokenizer, prompt: dict, max_new_tokens: int) -> bool:
    from instructify.evals.generation import chat_prompt_ids

    context = getattr(model.config, "max_position_embeddings", None) or 1 << 30
    return (
        len(chat_prompt_ids(tokenizer, prompt["messages"], prompt.get("tools"))) + max_new_tokens <= context
    )


def run_bfcl(
    model,
    tokenizer,
    per_category: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int = 0,
    constrained: bool = False,
) -> dict:
    """BFCL's five AST categories, `per_category` seeded items each, greedy; scored as BFCL scores them. An item
    whose prompt and budget exceed the model's context is left out of the score and counted (`too_long`)."""
    items = [i for cat in bfcl.CATEGORIES for i in bfcl.load(cat, per_category, seed)]
    prompts = [_prompt(tokenizer, i.id, i.messages, i.tools) for i in items]
    fits = [_fits(model, tokenizer, p, max_new_tokens) for p in prompts]
    too_long = dict(Counter(i.category for i, f in zip(items, fits) if not f))
    items = [i for i, f in zip(items, fits) if f]
    prompts = [p for p, f in zip(prompts, fits) if f]
    replies = conformance.generate(
        model, tokenizer, prompts, max_new_tokens, batch_size, constrained=constrained
    )
    calls = [chat_tools.parse_reply(r.text).calls for r in replies]
    result = bfcl.score(items, calls) | {"too_long": too_long}
    result["replies"] = [{"id": i.id, "reply": r.text, "stopped": r.stopped} for i, r in zip(items, replies)]
    return result


def read(out_dir) -> dict:
    """<out_dir>/tools.json: {model name: {"check": ..., "bfcl": ...}}; empty before the first check."""
    path = Path(out_dir) / "tools.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write(out_dir, name: str, result: dict) -> None:
    entries = read(out_dir)
    entries[name] = result
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "tools.json").write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
