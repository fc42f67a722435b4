"""Where synthetic instructions come from: self-instruct from seed examples, or a user's file; deduplicated and
kept apart from the instruction check."""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from pathlib import Path

from instructify.evals import checkable, generation, instructions

log = logging.getLogger(__name__)

KINDS = {  # what the self-instruct list is headed with, per kind in the seeds file
    "fact": "short questions of fact",
    "howto": "how-to questions about everyday tasks",
    "list": "requests for a short list of things",
    "rewrite": "requests to rewrite, correct or summarize a given sentence (the sentence included)",
    "translate": "requests to translate a word or a short phrase into another language",
    "arithmetic": "small arithmetic questions",
    "classify": "questions that ask to classify something",
    "yesno": "yes-or-no questions of fact",
}


class SynthError(ValueError):
    pass


def read_seeds(path: Path) -> dict[str, list[str]]:
    """`kind | instruction` lines (# comments), grouped by kind; every kind must be one of KINDS."""
    if not path.is_file():
        raise SynthError(f"{path}: seeds file not found (synth.seeds)")
    seeds: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, sep, text = (s.strip() for s in line.partition("|"))
        if not sep or kind not in KINDS or not text:
            raise SynthError(f"{path}:{n}: expected `kind | instruction` with kind one of {', '.join(KINDS)}")
        seeds.setdefault(kind, []).append(text)
    return seeds


def read_prompts(path: Path) -> list[tuple[str, str]]:
    """A user's prompt file: one instruction per line, or JSONL rows with `prompt` (and optionally `kind`)."""
    if not path.is_file():
        raise SynthError(f"{path}: prompts file not found (synth.prompts)")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                out.append((str(row.get("kind", "user")), str(row["prompt"])))
            except (json.JSONDecodeError, KeyError, AttributeError):
                raise SynthError(f'{path}:{n}: expected a JSON object with "prompt"') from None
        else:
            out.append(("user", line.strip()))
    return out


def normal_form(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def admit(prompt: str, seen: set[str], checks: list) -> str | None:
    """Why a prompt is not taken (the same as one already taken, or it touches an instruction-check item), else
    None; a taken prompt joins `seen`."""
    if normal_form(prompt) in seen:
        return "duplicate"
    if instructions.touches(prompt, checks):
        return "touches the instruction check"
    seen.add(normal_form(prompt))
    return None


def prompt_problem(text: str, kind: str = "") -> str | None:
    """Why a generated instruction is not kept (its counted reason), or None."""
    words = text.split()
    if len(words) < 3:
        return "prompt too short"
    if len(words) > 40:
        return "prompt too long"
    if not re.search(r"[?.!:]$", text) or "```" in text or "#" in text or "http" in text:
        return "prompt malformed"
    if not checkable.checkable(kind, text):  # the kind is there to be right; unchecked, it is a coin toss
        return f"{kind} prompt not checkable"
    return None


def self_instruct(model, tokenizer, seeds: dict[str, list[str]], n: int, seed: int, batch_size: int) -> tuple:
    """About `n` new instructions spread over the kinds: (kind, text) pairs, deduplicated, and the counts."""
    rng = random.Random(seed)
    kinds = sorted(seeds)
    seen = {normal_form(s) for k in kinds for s in seeds[k]}  # seeds count as seen
    counts: Counter = Counter()
    checks = instructions.items()
    new: list[tuple[str, str]] = []
    rounds = 0
    while len(new) < n and rounds < 12:
        rounds += 1
        jobs = []
        for _ in range(batch_size):
            kind = kinds[len(jobs) % len(kinds)] if rounds == 1 else rng.choice(kinds)
            shown = rng.sample(seeds[kind], min(3, len(seeds[kind])))
            head = f"Here are {KINDS[kind]} that people asked an AI assistant, one per line:\n"
            body = "".join(f"{i + 1}. {s}\n" for i, s in enumerate(shown))
            jobs.append((kind, head + body + f"{len(shown) + 1}.", len(shown) + 1))
        texts = generation.complete(
            model,
            tokenizer,
            [t for _, t, _ in jobs],
            "\n\n",
            96,
            batch_size,
            {"do_sample": True, "temperature": 1.0, "top_p": 0.95},
        )
        for (kind, _, first), (text, _) in zip(jobs, texts):
            lines = f"{first}.{text}".splitlines()
            if not text.endswith("\n"):
                lines = lines[:-1]  # the last line may be cut by the budget
            for line in lines:
                m = re.match(r"^\s*\d+\.\s*(.+?)\s*$", line)
                if not m:
                    continue
                prompt = m.group(1)
                counts["generated"] += 1
                reason = prompt_problem(prompt, kind) or admit(prompt, seen, checks)
                if reason:
                    counts[reason] += 1
                    continue
                new.append((kind, prompt))
        log.info("synth: round %d, %d new instructions", rounds, len(new))
    counts["kept"] = len(new[:n])
    return new[:n], counts
