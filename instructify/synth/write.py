"""`instructify synth`: instruction conversations written by a model, offline, for the data stage to mix in.

1. Prompts: new instructions of each kind in the seeds file, written by the base model itself from a few seed
   examples (self-instruct: a numbered list it continues, sampled), or read from a file the user supplies (one
   instruction per line, or JSONL with `prompt`). Deduplicated; a prompt that touches the instruction check's
   items (instructify/evals/instructions.py) is dropped, so the check measures what was not trained on. Seeded template
   prompts of the kinds a program can check are added (`synth.templated` of each, instructify/evals/checkable.py).
2. Replies: the base model under the in-context prompt (instructify/chat/incontext.py), or any instruct model through its own
   chat template (`synth.generator`: a folder, Hub id, .gguf or pypi:<package>). Greedy.
3. Filters with counted reasons: empty, unfinished (no end within the budget), a repeated sentence or loop, the
   prompt restated, template text in the reply, a refusal (no prompt here calls for one), and a wrong answer
   where a program can tell (instructify/evals/checkable.py: arithmetic, list counts, capitals, translations from its
   tables; arithmetic and translation prompts it cannot check are not asked at all). The kept rows go to a JSONL
   of `messages`; its provenance (generator, files and their hashes, seed, counts, seconds) to
   `<output>.provenance.json` beside it.

Our own code because TRL has no offline self-instruct or URIAL generation; the batching is instructify/evals/generation.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from pathlib import Path

from instructify.config import Config, SynthConfig
from instructify.evals import checkable, instructions
from instructify.synth.prompts import admit, normal_form, read_prompts, read_seeds, self_instruct
from instructify.synth.replies import Counts, answer, replier

log = logging.getLogger(__name__)

SYSTEMS = [
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in as few words as possible.",
    "You are a friendly tutor who explains things simply.",
    "Answer in one sentence.",
]


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
    model, tokenizer, reply, generator = replier(cfg)
    counts = Counts()
    prompts = _gather_prompts(cfg, model, tokenizer, counts, rng)
    t_prompts = time.time() - t0
    kept = _answer_first_turns(s, prompts, reply, tokenizer, counts, rng)
    rows, longer = _add_second_turns(s, kept, prompts, reply, tokenizer, counts, rng)
    _write_rows(out, rows)
    seconds = {"prompts": round(t_prompts, 1), "total": round(time.time() - t0, 1)}
    provenance = _provenance(cfg, out, rows, longer, counts, generator, seconds, _machine(model))
    Path(f"{out}.provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def _gather_prompts(
    cfg: Config, model, tokenizer, counts: Counts, rng: random.Random
) -> list[tuple[str, str]]:
    """The (kind, prompt) pairs to answer: the user's file, or self-instruct from the seeds plus templated ones.
    Counts each prompt's admission (kept or why dropped) in counts.prompts."""
    s = cfg.synth
    if s.prompts:
        checks, seen, prompts = instructions.items(), set(), []
        for kind, p in read_prompts(Path(s.prompts)):
            reason = admit(p, seen, checks)
            counts.prompts[reason or "kept"] += 1
            if not reason:
                prompts.append((kind, p))
        return prompts
    seeds = read_seeds(Path(s.seeds))
    if s.generator == "incontext":
        base, base_tok = model, tokenizer
    else:
        from instructify.training.model import load

        base, base_tok = load(cfg.model)
    prompts, counts.prompts = self_instruct(base, base_tok, seeds, s.num_prompts, s.seed, s.batch_size)
    checks, seen = instructions.items(), {normal_form(p) for _, p in prompts}
    for kind in checkable.TEMPLATED if s.templated else ():
        for p in checkable.prompts(kind, s.templated, rng):
            reason = admit(p, seen, checks)
            counts.prompts[f"templated {reason or 'kept'}"] += 1
            if not reason:
                prompts.append((kind, p))
    return prompts


def _answer_first_turns(
    s: SynthConfig, prompts, reply, tokenizer, counts: Counts, rng: random.Random
) -> list:
    """Each prompt as a conversation (a share of them with a random system message), answered and filtered."""
    conversations = []
    for kind, p in prompts:
        system = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < s.system_share else []
        conversations.append((kind, [*system, {"role": "user", "content": p}]))
    return answer(conversations, reply, tokenizer, counts, s.generator == "incontext", s.retries)


def _add_second_turns(
    s: SynthConfig, kept, prompts, reply, tokenizer, counts: Counts, rng: random.Random
) -> tuple[list, list]:
    """A second turn on some kept conversations: another instruction of the pool, answered with the first exchange
    in context (a model that answers only the first question of a conversation is no chat model). Returns the rows
    (each kept conversation, replaced by its two-turn version where that one was kept too) and the two-turn ones."""
    follow = []
    for _, m in kept:
        if rng.random() < s.multi_turn_share:
            kind, p = rng.choice(prompts)
            follow.append((kind, [*m, {"role": "user", "content": p}]))
    longer = answer(follow, reply, tokenizer, counts, s.generator == "incontext", s.retries)
    by_first = {json.dumps(m[:-2]): (k, m) for k, m in longer}
    rows = [by_first.get(json.dumps(m), (k, m)) for k, m in kept]
    return rows, longer


def _write_rows(out: Path, rows: list) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for kind, messages in rows:
            f.write(json.dumps({"messages": messages, "kind": kind}, ensure_ascii=False) + "\n")


def _provenance(
    cfg: Config,
    out: Path,
    rows: list,
    longer: list,
    counts: Counts,
    generator: str,
    seconds: dict,
    machine: str,
) -> dict:
    """What was written, from what, with which settings: the `<output>.provenance.json` document."""
    s = cfg.synth
    return {
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
        "seconds": seconds,
        "machine": machine,
    }


def _machine(model) -> str:
    import os
    import platform

    import torch

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {model.device}, {model.dtype}"
