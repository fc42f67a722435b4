"""Headroom: how often a model's own samples are right where its greedy answer is not.

Per kind of checkable prompt (instructify/evals/checkable.py: arithmetic, lists, capitals, translations, yes/no), pass@1
greedy and pass@k sampled (right and stopped in at least one of k samples), on prompts freshly seeded apart from
the instruction check. A round on the model's own checked answers (rejection sampling, preference pairs) can lift
greedy towards pass@k and no further, so this is the ceiling to measure before one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from instructify.evals import checkable, conformance, instructions

FILE = "headroom.json"


def prompts(
    per_kind: int,
    check_per_kind: int,
    seed: int,
    kinds: tuple[str, ...] | list[str] = checkable.ROUND_KINDS,
    varied: bool = False,
) -> list[tuple[str, str]]:
    """(kind, prompt): up to `per_kind` distinct checkable prompts of each of `kinds`, none touching an item
    of the instruction check of `check_per_kind` items per kind (instructions.touches); `varied`: in
    checkable.ROUND_ASKED's phrasings."""
    rng, checks = random.Random(seed), instructions.items(per_kind=check_per_kind)
    out: list[tuple[str, str]] = []
    for kind in checkable.ROUND_KINDS:  # every kind drawn, so the draws of one do not depend on `kinds`
        got: list[str] = []
        for prompt in checkable.prompts(
            kind, 20 * per_kind, rng, varied
        ):  # the tables are small: draw many, keep distinct
            fits = checkable.checkable(kind, prompt) and not instructions.touches(prompt, checks)
            if fits and prompt not in got:
                got.append(prompt)
            if len(got) == per_kind:
                break
        out += [(kind, p) for p in got if kind in kinds]
    return out


def right(prompt: str, text: str, stopped: bool) -> bool:
    """A reply that a round would keep: judged right (the check's judges) and ended by itself."""
    return stopped and checkable.wrong(prompt, text) is None


def sampling_of(template) -> dict:
    """How the model's own samples are drawn: the exported generation_config's temperature and top_p
    (`template.*`), 0.8 where that is greedy."""
    return {"do_sample": True, "temperature": template.temperature or 0.8, "top_p": template.top_p}


def chats(asked: list[tuple[str, str]]) -> list[dict]:
    """One single-turn conversation per (kind, prompt), as conformance.generate takes them."""
    return [
        {"id": f"{kind}-{i}", "prior_turns": 1, "messages": [{"role": "user", "content": p}]}
        for i, (kind, p) in enumerate(asked)
    ]


def sample(model, tokenizer, asked, k: int, sampling: dict, max_new_tokens: int, batch_size: int, seed: int):
    """k sampled replies to each (kind, prompt), seeded: reply j of prompt i at j * len(asked) + i."""
    return sample_chats(model, tokenizer, chats(asked), k, sampling, max_new_tokens, batch_size, seed)


def sample_chats(
    model, tokenizer, prompts, k: int, sampling: dict, max_new_tokens: int, batch_size: int, seed: int
):
    """k sampled replies to each conversation (conformance.generate's prompts), seeded as `sample`."""
    torch.manual_seed(seed)  # sampling draws from the global stream, as generate() does
    return conformance.generate(model, tokenizer, prompts * k, max_new_tokens, batch_size, sampling)


def measure(
    model,
    tokenizer,
    asked: list[tuple[str, str]],
    k: int,
    sampling: dict,
    max_new_tokens: int,
    batch_size: int,
    seed: int = 0,
) -> dict:
    """Greedy pass@1, sampled pass@1 (the mean over k) and pass@k per kind and overall, with 95% intervals."""
    greedy = conformance.generate(model, tokenizer, chats(asked), max_new_tokens, batch_size)
    sampled = sample(model, tokenizer, asked, k, sampling, max_new_tokens, batch_size, seed)
    rows = []
    for i, (kind, p) in enumerate(asked):
        tries = [right(p, r.text, r.stopped) for r in sampled[i :: len(asked)]]
        rows.append({"kind": kind, "prompt": p, "greedy": right(p, greedy[i].text, greedy[i].stopped),
                     "greedy_reply": greedy[i].text, "sampled_right": sum(tries)})  # fmt: skip

    def summary(of: list[dict]) -> dict:
        n, g, a = len(of), sum(r["greedy"] for r in of), sum(r["sampled_right"] > 0 for r in of)
        return {"n": n, "greedy": g / max(n, 1), "greedy_ci95": conformance.wilson(g, n),
                "sampled": sum(r["sampled_right"] for r in of) / max(n * k, 1),
                f"pass_at_{k}": a / max(n, 1), f"pass_at_{k}_ci95": conformance.wilson(a, n)}  # fmt: skip

    kinds = {kind: summary([r for r in rows if r["kind"] == kind]) for kind in checkable.ROUND_KINDS}
    return {
        "k": k,
        "sampling": sampling,
        "seed": seed,
        "overall": summary(rows),
        "by_kind": kinds,
        "rows": rows,
    }


def write(out_dir: Path, name: str, result: dict) -> Path:
    """<out_dir>/headroom.json: one entry per measured model."""
    path = Path(out_dir) / FILE
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[name] = result
    path.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
    return path


def table(entries: dict) -> str:
    """Markdown: greedy / sampled / pass@k per kind, one row per model."""
    lines = [
        "| model | k | kind | n | greedy pass@1 | sampled pass@1 | pass@k |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in entries.items():
        at = f"pass_at_{e['k']}"
        for kind, s in {**e["by_kind"], "all": e["overall"]}.items():
            lines.append(
                f"| {name} | {e['k']} | {kind} | {s['n']} | {s['greedy']:.1%} | {s['sampled']:.1%} | {s[at]:.1%} |"
            )
    return "\n".join(lines)
