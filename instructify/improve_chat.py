"""Chit-chat pairs against loops for an `improve` round (`improve.chat_pairs`, rpo): the model's own greedy replies
to chit-chat prompts of the SFT mix's training side, each paired with a reply that repeats itself.

Why: the SFT model loops already (runs/qs-rpo: 8 of 200 greedy chat replies, "I'm not sure. I'm not sure."), and a
round on checkable prompts alone never sees chat, so its loops guard (<= 1%) held only by chance. A clean greedy
reply is chosen over itself with its last sentence said twice more: the two differ exactly where the model should
write <|im_end|> and goes on instead (the target of unlikelihood training, Welleck et al. 2019, as a preference).
A greedy reply that loops is itself rejected, against a clean sample of the same prompt.
Our own code: TRL trains on pairs, it does not make them.
"""

from __future__ import annotations

import dataclasses
import random
import re

from instructify import config as config_lib
from instructify.chat import template
from instructify.data import mixture, records, splits
from instructify.evals import conformance, headroom


def prompts(cfg: config_lib.Config, tokenizer, n: int, seed: int) -> list[dict]:
    """`n` seeded chit-chat prompts from the training side of the SFT mix (never a held-out conversation, which
    the guards measure), chosen as the held-out prompts are (splits.eval_prompts): conversations of two exchanges
    or more without tools, cut before an assistant reply after 1, 3 or 5 turns whose conversation so far fits
    its token limit (data.max_length, or its source's own), and loaded with SFT's special-text rule."""
    forbidden = template.special_texts(tokenizer) if cfg.template.special_text == "reject" else ()
    convs = mixture.load(cfg.data, forbidden, records.LoadReport(), cfg.template.system_prompt)
    chats = {
        c.id: c
        for c in convs
        if not c.tools
        and len(c.messages) >= 4
        and not splits.held_out(c.id, cfg.data.seed, cfg.data.eval_share)
    }
    picked = [chats[i] for i in random.Random(seed).sample(sorted(chats), min(n, len(chats)))]
    ends = [_Ends(_ends(tokenizer, c.messages, splits.limit_of(c, cfg.data.max_length))) for c in picked]
    return splits.eval_prompts(picked, ends, cfg.data.max_length, seed)  # "reference": the gold reply, unused


@dataclasses.dataclass
class _Ends:
    ends: list[int]  # the token count of the conversation through each message, as splits.eval_prompts reads


def _ends(tokenizer, messages: list[dict], limit: int) -> list[int]:
    """Token counts of the conversation rendered through each message (transformers' sandboxed render), up to
    the first past `limit`. Our encoder (template.encode) needs the training run's ChatTokens, which a round's
    start folder does not carry; the rendered counts are the same for a ChatML folder."""
    out: list[int] = []
    for i in range(len(messages)):
        out.append(_length(tokenizer, messages[: i + 1]))
        if out[-1] > limit:
            break
    return out


def _length(tokenizer, messages: list[dict]) -> int:
    """Tokens of the conversation as the model's own template renders it (transformers' sandboxed path)."""
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


SENTENCE = re.compile(r"[^.!?\n]*\w[^.!?\n]*[.!?]?")


def said_again(text: str) -> str | None:
    """The reply with its last sentence of 3 words or more said twice more ("I'm not sure." -> "I'm not sure. I'm
    not sure. I'm not sure."): the loop of runs/qs-rpo8's chat replies. None when no sentence is that long."""
    text = text.strip()
    said = [s.strip() for s in SENTENCE.findall(text) if len(re.findall(r"\w+", s)) >= 3]
    if not said:
        return None
    last = said[-1] if said[-1][-1] in ".!?" else said[-1] + "."
    return f"{text if text[-1] in '.!?' else text + '.'} {last} {last}"


def pairs(model, tokenizer, asked: list[dict], cfg: config_lib.Config, seed: int):
    """(pairs, one record per prompt, counts by outcome). Greedy replies to every prompt; `improve.samples`
    samples of those whose greedy reply loops, the first clean one of them its chosen."""
    e = cfg.eval
    greedy = conformance.generate(model, tokenizer, asked, e.max_new_tokens, e.batch_size)
    looping = [n for n, r in enumerate(greedy) if r.loop]
    sampling = headroom.sampling_of(cfg.template)
    again = [asked[n] for n in looping]
    k = cfg.improve.samples
    drawn = (
        headroom.sample_chats(model, tokenizer, again, k, sampling, e.max_new_tokens, e.batch_size, seed)
        if again
        else []
    )
    clean = {}
    for j, r in enumerate(drawn):
        at = looping[j % len(looping)]
        if r.clean_stop and not r.loop and at not in clean:
            clean[at] = r.text.strip()
    made, samples, counts = [], [], {}
    for n, (p, r) in enumerate(zip(asked, greedy)):
        if r.loop:
            chosen, rejected = clean.get(n), r.text.strip()  # as generated: the loop is in its tokens
            why = "greedy loops, against a clean sample" if chosen else "greedy loops, no clean sample"
        elif r.clean_stop:
            chosen, rejected = r.text.strip(), said_again(r.text)
            why = (
                "clean greedy, against itself said again"
                if rejected
                else "clean greedy, no sentence to repeat"
            )
        else:
            chosen, why = None, "greedy did not stop cleanly"
        if chosen and rejected and _longer(tokenizer, p["messages"], (chosen, rejected), cfg.data.max_length):
            chosen, why = None, "pair longer than data.max_length (TRL would cut its tail)"
        counts[why] = counts.get(why, 0) + 1
        samples.append({"id": p["id"], "greedy": r.text, "stopped": r.stopped, "loop": r.loop, "why": why})
        if chosen and rejected:
            made.append({"kind": "chat", "prompt": p["messages"],
                         "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})  # fmt: skip
    counts["chat pairs"] = len(made)
    return made, samples, counts


def _longer(tokenizer, messages: list[dict], replies: tuple[str, str], limit: int) -> bool:
    """Whether either reply, after the prompt, renders past `limit`: DPOConfig's max_length keeps the start, so the
    repeated sentence that tells the two apart, and the <|im_end|>, would be cut (12 of runs/qs-chat2's 120)."""
    return any(_length(tokenizer, [*messages, {"role": "assistant", "content": r}]) > limit for r in replies)
