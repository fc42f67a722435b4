"""The teacher's replies to synthetic instructions and the filters a reply must pass, each with its counted reason;
a reply a program finds wrong is sampled again."""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

from instructify.chat import incontext
from instructify.config import Config
from instructify.evals import checkable, generation
from instructify.evals.conformance import leaks, looped
from instructify.synth.prompts import normal_form

log = logging.getLogger(__name__)

RETRY = {"do_sample": True, "temperature": 0.8, "top_p": 0.95}  # how a wrong reply is tried again
REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i cannot|i can'?t|i can not|as an ai|i am not able|i'?m not able|i don'?t know)\b",
    re.IGNORECASE,
)
YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
QUOTED = re.compile(r"'([^']+)'")


@dataclass
class Counts:
    prompts: Counter = field(default_factory=Counter)
    replies: Counter = field(default_factory=Counter)


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
    words = set(normal_form(reply).split())
    restated = len(normal_form(prompt)) > 12 and normal_form(prompt) in normal_form(reply)
    # nothing but the prompt's own words ("44045 is 44045."); an arithmetic answer may be an operand
    echoed = kind != "arithmetic" and len(words) >= 3 and words <= set(normal_form(prompt).split())
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


def replier(cfg: Config):
    """(model, tokenizer, reply function, name): the base under the in-context prompt, or an instruct model."""
    from instructify.training.model import load, resolve

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


def answer(
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
