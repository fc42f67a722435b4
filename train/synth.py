"""`python -m train synth`: instruction conversations written by a model, offline, for the data stage to mix in.

1. Prompts: new instructions of each kind in the seeds file, written by the base model itself from a few seed
   examples (self-instruct: a numbered list it continues, sampled), or read from a file the user supplies (one
   instruction per line, or JSONL with `prompt`). Deduplicated; a prompt that touches the instruction check's
   items (train/instructions.py) is dropped, so the check measures what was not trained on. Seeded template
   prompts of the kinds a program can check are added (`synth.templated` of each, train/checkable.py).
2. Replies: the base model under the in-context prompt (train/incontext.py), or any instruct model through its own
   chat template (`synth.generator`: a folder, Hub id, .gguf or pypi:<package>). Greedy.
3. Filters with counted reasons: empty, unfinished (no end within the budget), a repeated sentence or loop, the
   prompt restated, template text in the reply, a refusal (no prompt here calls for one), and a wrong answer
   where a program can tell (train/checkable.py: arithmetic, list counts, capitals, translations from its
   tables; arithmetic and translation prompts it cannot check are not asked at all). The kept rows go to a JSONL
   of `messages`; its provenance (generator, files and their hashes, seed, counts, seconds) to
   `<output>.provenance.json` beside it.

Our own code because TRL has no offline self-instruct or URIAL generation; the batching is train/generation.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from train import checkable, generation, incontext, instructions
from train.config import Config
from train.evaluate import leaks, looped

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
SYSTEMS = [
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in as few words as possible.",
    "You are a friendly tutor who explains things simply.",
    "Answer in one sentence.",
]
RETRY = {"do_sample": True, "temperature": 0.8, "top_p": 0.95}  # how a wrong reply is tried again
REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i cannot|i can'?t|i can not|as an ai|i am not able|i'?m not able|i don'?t know)\b",
    re.IGNORECASE,
)
YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
QUOTED = re.compile(r"'([^']+)'")


class SynthError(ValueError):
    pass


@dataclass
class Counts:
    prompts: Counter = field(default_factory=Counter)
    replies: Counter = field(default_factory=Counter)


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


def _key(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def admit(prompt: str, seen: set[str], checks: list) -> str | None:
    """Why a prompt is not taken (the same as one already taken, or it touches an instruction-check item), else
    None; a taken prompt joins `seen`."""
    if _key(prompt) in seen:
        return "duplicate"
    if instructions.touches(prompt, checks):
        return "touches the instruction check"
    seen.add(_key(prompt))
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
    seen = {_key(s) for k in kinds for s in seeds[k]}  # seeds count as seen
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


def reply_problem(prompt: str, reply: str, ended: bool, ids: list[int], kind: str = "") -> str | None:
    """Why a generated reply is not trained on (its counted reason), or None."""
    if not reply.strip():
        return "empty"
    if not ended:
        return "unfinished"
    if looped(ids, reply):
        return "repeated sentence or loop"
    if leaks(reply) or "```" in reply or "# Query" in reply or "# Answer" in reply:
        return "template text"
    words = set(_key(reply).split())
    restated = len(_key(prompt)) > 12 and _key(prompt) in _key(reply)
    # nothing but the prompt's own words ("44045 is 44045."); an arithmetic answer may be an operand
    echoed = kind != "arithmetic" and len(words) >= 3 and words <= set(_key(prompt).split())
    if restated or echoed:
        return "restates the prompt"
    if REFUSAL.search(reply):
        return "refusal"
    if reason := checkable.wrong(prompt, reply):
        return reason
    if untranslated(prompt, reply):
        return "untranslated"
    return None


def untranslated(prompt: str, reply: str) -> bool:
    """A translation request answered with the word it asked about, quoted ("'good' in Spanish is 'good'")."""
    if not re.search(r"\btranslat|\bsay\b|\bword for\b", prompt, re.IGNORECASE):
        return False
    asked = {q.lower() for q in QUOTED.findall(prompt)}
    answered = [q.lower() for q in QUOTED.findall(reply)]
    return bool(asked) and bool(answered) and answered[-1] in asked


def first_yes_no(text: str) -> str | None:
    m = YES_NO.search(text)
    return m.group(1).lower() if m else None


def _replier(cfg: Config):
    """(model, tokenizer, reply function, name): the base under the in-context prompt, or an instruct model."""
    from train.model import load, resolve

    s = cfg.synth
    if s.generator == "incontext":
        preamble = incontext.load(s.incontext)
        model, tokenizer = load(cfg.model)

        def reply(conversations: list[list[dict]], other_order: bool = False, sampling=None) -> list:
            texts = [incontext.render(c) for c in conversations]
            prefix = incontext.reordered(preamble) if other_order else preamble
            return generation.complete(
                model,
                tokenizer,
                texts,
                incontext.FENCE,
                s.max_new_tokens,
                s.batch_size,
                sampling,
                prefix=prefix,
            )

        return model, tokenizer, reply, f"{cfg.model.name} under {s.incontext}"
    model, tokenizer = load(cfg.model, path=resolve(s.generator))
    stop_ids = generation.stop_ids_of(model)

    def reply(conversations: list[list[dict]], other_order: bool = False, sampling=None) -> list:
        prompts = [generation.chat_prompt_ids(tokenizer, c) for c in conversations]
        rows = generation.generate_ids(
            model,
            prompts,
            s.max_new_tokens,
            s.batch_size,
            generation.pad_id_of(tokenizer, stop_ids),
            generation.stop_at_ids(stop_ids),
            sampling,
        )
        ended = [bool(r) and r[-1] in stop_ids for r in rows]
        return [
            (tokenizer.decode(r[:-1] if e else r, skip_special_tokens=True), e) for r, e in zip(rows, ended)
        ]

    return model, tokenizer, reply, s.generator


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run(cfg: Config) -> dict:
    """Write cfg.synth.output (JSONL of messages) and its provenance; returns the provenance."""
    from transformers import set_seed

    s = cfg.synth
    out = Path(s.output)
    t0 = time.time()
    set_seed(s.seed)
    rng = random.Random(s.seed)
    model, tokenizer, reply, generator = _replier(cfg)
    counts = Counts()
    if s.prompts:
        checks, seen, prompts = instructions.items(), set(), []
        for kind, p in read_prompts(Path(s.prompts)):
            reason = admit(p, seen, checks)
            counts.prompts[reason or "kept"] += 1
            if not reason:
                prompts.append((kind, p))
    else:
        seeds = read_seeds(Path(s.seeds))
        if s.generator == "incontext":
            base, base_tok = model, tokenizer
        else:
            from train.model import load

            base, base_tok = load(cfg.model)
        prompts, counts.prompts = self_instruct(base, base_tok, seeds, s.num_prompts, s.seed, s.batch_size)
        checks, seen = instructions.items(), {_key(p) for _, p in prompts}
        for kind in checkable.TEMPLATED if s.templated else ():
            for p in checkable.prompts(kind, s.templated, rng):
                reason = admit(p, seen, checks)
                counts.prompts[f"templated {reason or 'kept'}"] += 1
                if not reason:
                    prompts.append((kind, p))
    t_prompts = time.time() - t0

    conversations = []
    for kind, p in prompts:
        system = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < s.system_share else []
        conversations.append((kind, [*system, {"role": "user", "content": p}]))
    kept = _answer(conversations, reply, tokenizer, counts, s.generator == "incontext", s.retries)
    # a second turn on some kept conversations: another instruction of the pool, answered with the first exchange
    # in context (a model that answers only the first question of a conversation is no chat model)
    follow = []
    for _, m in kept:
        if rng.random() < s.multi_turn_share:
            kind, p = rng.choice(prompts)
            follow.append((kind, [*m, {"role": "user", "content": p}]))
    longer = _answer(follow, reply, tokenizer, counts, s.generator == "incontext", s.retries)
    by_first = {json.dumps(m[:-2]): (k, m) for k, m in longer}
    rows = [by_first.get(json.dumps(m), (k, m)) for k, m in kept]

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for kind, messages in rows:
            f.write(json.dumps({"messages": messages, "kind": kind}, ensure_ascii=False) + "\n")
    provenance = {
        "output": str(out),
        "rows": len(rows),
        "multi_turn": len(longer),
        "with_system": sum(m[0]["role"] == "system" for _, m in rows),
        "by_kind": dict(Counter(k for k, _ in rows)),
        "generator": generator,
        "base_model": cfg.model.name,
        "files": {
            str(p): _sha(Path(p))
            for p in ([s.prompts] if s.prompts else [s.seeds])
            + ([s.incontext] if s.generator == "incontext" else [])
        },
        "seed": s.seed,
        "settings": {
            k: getattr(s, k)
            for k in (
                "num_prompts",
                "templated",
                "retries",
                "max_new_tokens",
                "system_share",
                "multi_turn_share",
            )
        },
        "prompts": dict(counts.prompts),
        "replies": dict(counts.replies),
        "seconds": {"prompts": round(t_prompts, 1), "total": round(time.time() - t0, 1)},
        "machine": _machine(model),
    }
    Path(f"{out}.provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def _answer(
    conversations: list[tuple[str, list[dict]]],
    reply,
    tokenizer,
    counts: Counts,
    consistent: bool = False,
    retries: int = 0,
) -> list:
    """The conversations with a kept reply appended; every dropped one counted by its reason. `consistent`: a
    yes/no answer must be the same under the preamble's examples in the other order (incontext.reordered).
    `retries`: a reply a program found wrong is sampled again up to that many times and the first that passes
    every filter is kept (rejection sampling; counted as "right on a sampled retry")."""
    done = reply([m for _, m in conversations]) if conversations else []
    yes_no = [i for i, (kind, _) in enumerate(conversations) if kind == "yesno"] if consistent else []
    again = (
        dict(zip(yes_no, reply([conversations[i][1] for i in yes_no], other_order=True))) if yes_no else {}
    )

    def problem(i: int, text: str, ended: bool) -> str | None:
        messages = conversations[i][1]
        reason = reply_problem(
            messages[-1]["content"], text, ended, tokenizer(text)["input_ids"], conversations[i][0]
        )
        if reason is None and i in again and first_yes_no(again[i][0]) != first_yes_no(text):
            reason = "yes/no differs with the examples reordered"
        return reason

    texts = {i: t.strip() for i, (t, _) in enumerate(done)}
    reasons = {i: problem(i, texts[i], ended) for i, (_, ended) in enumerate(done)}
    for attempt in range(retries):
        wrong = [i for i, r in reasons.items() if r in checkable.WRONG]
        if not wrong:
            break
        log.info("synth: sampled retry %d of %d for %d wrong replies", attempt + 1, retries, len(wrong))
        for i, (text, ended) in zip(wrong, reply([conversations[i][1] for i in wrong], sampling=RETRY)):
            if problem(i, text.strip(), ended) is None:
                texts[i], reasons[i] = text.strip(), None
                counts.replies["right on a sampled retry"] += 1
    kept = []
    for i, (kind, messages) in enumerate(conversations):
        counts.replies[reasons[i] or "kept"] += 1
        if not reasons[i]:
            kept.append((kind, [*messages, {"role": "assistant", "content": texts[i]}]))
    return kept


def _machine(model) -> str:
    import os
    import platform

    import torch

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {model.device}, {model.dtype}"
