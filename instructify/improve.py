"""`instructify improve`: rounds on the model's own checked answers after SFT (rejection-sampling fine-tuning).

A round samples `improve.samples` replies to each of `improve.prompts_per_kind` checkable prompts per kind
(instructify/evals/checkable.py, seeded apart from the instruction check and from `instructify headroom`'s), keeps
those a program finds right that ended cleanly without a loop (at most `improve.keep_per_prompt` distinct ones a
prompt), and trains a fresh LoRA on the current model's merged weights over them, mixed with `improve.sft_share`
of the SFT data so chit-chat does not drift. It runs through the `train` stages, so round-N/ has its own
report (the model it started from as its `base`), export and doctor, and the next round starts from its model.
Our own driver: TRL has the trainers, not the loop of sampling, judging and retraining (ReST-EM, RFT).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from instructify import config as config_lib
from instructify import improve_chat, pipeline
from instructify.evals import checkable, conformance, headroom, instructions, second_set

log = logging.getLogger("instructify")

FILE = "improve.json"


NUMBER = re.compile(r"-?\d+")


def misquoted(prompt: str, text: str) -> bool:
    """An arithmetic reply whose numbers are not the answer alone or the operands then the answer ("14 - 22 is
    14." to "What is 36 - 22?"): the check's judge takes the first number past the operands and passes it, but it
    is no reply to train on (a hint invites such copies)."""
    result = checkable.arithmetic_result(prompt)
    if result is None:
        return False
    a, _, b = checkable.ARITHMETIC.findall(prompt)[0]
    return NUMBER.findall(text.replace(",", "")) not in ([result], [a, b, result])


def corrected(prompt: str, text: str) -> str | None:
    """A wrong arithmetic reply with its result replaced by the right one, where its numbers are the operands
    then one result ("15 + 10 is 100." to "What is 15 plus 10?" becomes "15 + 10 is 25."), or a number alone:
    the model's own form with the program's sum, for prompts where no sample, hinted or not, was right."""
    result = checkable.arithmetic_result(prompt)
    found = list(NUMBER.finditer(text))
    if result is None or len(found) not in (1, 3):
        return None
    a, _, b = checkable.ARITHMETIC.findall(prompt)[0]
    if [m.group() for m in found[:-1]] not in ([], [a, b]):
        return None
    return text[: found[-1].start()] + result + text[found[-1].end() :]


FILLER = {"is", "are", "was", "a", "an", "the", "do", "does", "can", "in", "of", "to", "than", "on", "it", "they",
          "have", "has", "there"}  # fmt: skip
NEGATION = re.compile(r"\b(?:not|no|never|none|nothing|cannot)\b|n't\b")


def contradicts(prompt: str, text: str) -> bool:
    """A yes/no reply whose sentence after the answer says the opposite ("No. The Sun is cold." to "Is the Sun
    cold?", "Yes. Cats have no whiskers."): the check's judge reads the first yes or no alone and passes it, but a
    round that trains on it teaches "No." before any restated question, the SFT model's way of being wrong."""
    answer, said = checkable.yesno_answer(prompt), instructions.norm(text)
    m = re.search(r"\b(yes|no)\b", said)
    if answer is None or m is None:
        return False
    rest = said[m.end() :]
    if NEGATION.search(rest):
        return answer == "yes"
    words = lambda t: {w.removesuffix("s") for w in re.findall(r"[a-z]+", t) if w not in FILLER}
    return answer == "no" and words(instructions.norm(prompt)) <= words(rest)


STOP_WORDS = {"a", "an", "the", "to", "of", "and", "in", "with", "for", "on", "at", "your", "my"}


def repetitive(prompt: str, text: str) -> bool:
    """A list reply two of whose items share half their words or more ("1. Eat a healthy breakfast. 2. Eat a
    healthy lunch."): the check's judge counts distinct items and passes it, but rounds that kept such lists
    wrote them into chit-chat, where they ran on ("1. X. 2. X. 3. X.": runs/qs-rpo6, loops 4.5%)."""
    if checkable.LIST_LEAD.match(prompt) is None:
        return False
    words = [set(re.findall(r"[a-z]+", item)) - STOP_WORDS for item in instructions.list_items(text)]
    return any(len(a & b) >= 0.5 * len(a | b) for n, a in enumerate(words) for b in words[n + 1 :] if a | b)


def judged(prompt: str, reply: conformance.Reply) -> str | None:
    """Why a sampled reply is not kept (None: kept): it must end cleanly, not loop, and be right."""
    if not reply.clean_stop:
        return "did not stop cleanly"
    if reply.loop:
        return "loop"
    if (why := checkable.wrong(prompt, reply.text)) is None and misquoted(prompt, reply.text):
        return "right answer, prompt misquoted"
    if why is None and contradicts(prompt, reply.text):
        return "right answer, reply contradicts itself"
    if why is None and repetitive(prompt, reply.text):
        return "right count, items repeat each other"
    return why


ANSWERS = {
    "arithmetic": checkable.arithmetic_result,
    "capital": checkable.capital_answer,
    "translate": checkable.translation_answer,
    "yes/no": checkable.yesno_answer,
}


def hinted(kind: str, prompt: str) -> str | None:
    """The prompt with its right answer as a hint (STaR's rationalisation), for kinds with one right answer."""
    answer = ANSWERS[kind](prompt) if kind in ANSWERS else None
    return f"{prompt} (Hint: the answer is {answer}.)" if answer else None


def own_rows(model, tokenizer, asked: list[tuple[str, str]], cfg: config_lib.Config, seed: int):
    """(rows to train on, every sample with its verdict, counts by reason) for one round. With `improve.hints`,
    prompts none of whose samples is right are sampled again with the answer as a hint; a right reply to the
    hinted prompt is kept for the prompt as asked (the hint is never trained on)."""
    i, e = cfg.improve, cfg.eval
    sampling = headroom.sampling_of(cfg.template)
    draw = lambda prompts, s: headroom.sample(
        model, tokenizer, prompts, i.samples, sampling, e.max_new_tokens, e.batch_size, s
    )
    kept: dict[int, list[str]] = {}
    samples, counts = [], Counter()

    def judge_all(replies, at_of: list[int], hint: list[str | None]) -> None:
        for n, reply in enumerate(replies):
            at = at_of[n % len(at_of)]
            kind, prompt = asked[at]
            why = judged(prompt, reply)
            if why is None and reply.text.strip() in kept.get(at, []):
                why = "same as a kept reply"
            elif why is None and len(kept.get(at, [])) >= i.keep_per_prompt:
                why = "prompt has enough"
            if why is None:
                kept.setdefault(at, []).append(reply.text.strip())
            counts[("kept" if why is None else why) + (" (hinted)" if hint[n % len(at_of)] else "")] += 1
            samples.append({"kind": kind, "prompt": prompt, "reply": reply.text, "stopped": reply.stopped,
                            "kept": why is None, "why": why, "hint": hint[n % len(at_of)]})  # fmt: skip

    everyone = list(range(len(asked)))
    judge_all(draw(asked, seed), everyone, [None] * len(asked))
    hints = [(at, h) for at in everyone if at not in kept and (h := hinted(*asked[at]))] if i.hints else []
    if hints:
        again = draw([(asked[at][0], h) for at, h in hints], seed + 1)
        judge_all(again, [at for at, _ in hints], [h for _, h in hints])
    if i.corrections:
        for n, text in _corrections(samples, asked, kept, i.keep_per_prompt):
            kept.setdefault(n, []).append(text)
            counts["kept (corrected)"] += 1
            samples.append({"kind": asked[n][0], "prompt": asked[n][1], "reply": text, "stopped": True,
                            "kept": True, "why": None, "hint": "corrected"})  # fmt: skip
    rows = [{"id": f"own-{at}-{k}", "messages": [{"role": "user", "content": asked[at][1]},
             {"role": "assistant", "content": text}]} for at, texts in sorted(kept.items())
            for k, text in enumerate(texts)]  # fmt: skip
    counts["prompts with a kept reply"] = len(kept)
    return rows, samples, dict(counts)


def _corrections(
    samples: list[dict], asked: list[tuple[str, str]], kept: dict, most: int
) -> list[tuple[int, str]]:
    """(prompt index, corrected reply): for each prompt with nothing kept, up to `most` distinct corrections of
    its wrong arithmetic samples (stopped cleanly, no loop: `judged` says so before it judges the sum)."""
    at = {(kind, p): n for n, (kind, p) in enumerate(asked)}
    out: dict[int, list[str]] = {}
    for s in samples:
        n = at[(s["kind"], s["prompt"])]
        fixed = corrected(s["prompt"], s["reply"].strip()) if s["why"] == "wrong arithmetic" else None
        if n in kept or fixed is None or fixed in out.get(n, []) or len(out.get(n, [])) >= most:
            continue
        if checkable.wrong(s["prompt"], fixed) is None and not misquoted(s["prompt"], fixed):
            out.setdefault(n, []).append(fixed)
    return [(n, text) for n, texts in out.items() for text in texts]


RIGHT = (None, "same as a kept reply", "prompt has enough")


def pairs_of(samples: list[dict], most: int) -> tuple[list[dict], dict]:
    """Preference pairs, at most `most` a prompt: chosen a distinct right reply, rejected a distinct wrong or
    looping one that ended on <|im_end|> as generated (the template closes every reply with it, so a reply that
    ran to the token limit would be scored as if it had stopped there). Counts: pairs, and prompts by why none."""
    by_prompt: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for s in samples:
        chosen, rejected = by_prompt.setdefault((s["kind"], s["prompt"]), ([], []))
        text = s["reply"].strip()
        if s["why"] in RIGHT:
            side = chosen
        elif s["stopped"] and s["why"] != "did not stop cleanly":
            side = rejected
        else:
            continue
        if text not in side:
            side.append(text)
    pairs, counts = [], Counter()
    for (kind, prompt), (chosen, rejected) in by_prompt.items():
        if not (chosen and rejected):
            counts["prompts with no right reply" if not chosen else "prompts with no wrong reply"] += 1
            continue
        alike = {form: [r for r in rejected if lined(r) == form] for form in (True, False)}
        chosen = [c for c in chosen if alike[lined(c)]]
        if not chosen:
            counts["prompts with no wrong reply of a right one's form"] += 1
            continue
        counts["prompts with a pair"] += 1
        # chosen and rejected cycled, in order and distinct, as far as `most`
        made: list[tuple[str, str]] = []
        for k, right in enumerate(chosen * most):
            same = alike[lined(right)]
            pair = (right, same[k % len(same)])
            if pair not in made:
                made.append(pair)
        for right, wrong in made[:most]:
            pairs.append({"kind": kind, "prompt": [{"role": "user", "content": prompt}],
                          "chosen": [{"role": "assistant", "content": right}],
                          "rejected": [{"role": "assistant", "content": wrong}]})  # fmt: skip
    pairs, dropped = balanced(pairs)
    if dropped:
        counts["yes/no pairs dropped to balance yes and no"] = dropped
    counts["pairs"] = len(pairs)
    return pairs, dict(counts)


def lined(text: str) -> bool:
    """A reply written as bulleted or numbered lines. A pair's two replies are of one form (lines, or not):
    in runs/qs-rpo6, 17 of 46 list pairs chose lines over a sentence (none the reverse), so the round learnt lines
    and wrote them into chit-chat ("1. I have earned several scholarships. 2. I have earned ...")."""
    return sum(bool(instructions.BULLET.match(line)) for line in text.splitlines()) >= 2


def balanced(pairs: list[dict]) -> tuple[list[dict], int]:
    """The pairs with as many yes/no ones whose answer is yes as no (the first of each, in order), and how many
    were dropped. A model that restates the question after its answer is right on yes-questions more often, so
    unbalanced pairs teach "Yes." before everything (runs/qs-rpo3-unbalanced: 36 yes to 12 no, then yes/no 25 of
    50 with every no-question answered yes)."""
    answer = lambda p: checkable.yesno_answer(p["prompt"][-1]["content"]) if p["kind"] == "yes/no" else None
    most = min(sum(answer(p) == a for p in pairs) for a in ("yes", "no"))
    kept, seen = [], Counter()
    for p in pairs:
        if (a := answer(p)) is not None:
            seen[a] += 1
            if seen[a] > most:
                continue
        kept.append(p)
    return kept, len(pairs) - len(kept)


def round_config(cfg: config_lib.Config, n: int, start: Path, rows_file: Path) -> config_lib.Config:
    """The `train` config of round n: from the `start` model's merged weights (its own ChatML template), a fresh
    LoRA over the kept rows and a share of the SFT sources (the start, a local folder, is never stored)."""
    i = cfg.improve
    own = config_lib.SourceConfig(path=str(rows_file), format="messages")
    mixed = i.sft_share > 0 and i.method == "rft"  # rpo trains on its pairs alone; its NLL term is on them
    sft = [replace(s, weight=s.weight * i.sft_share) for s in cfg.data.sources] if mixed else []
    return replace(
        cfg,
        output_dir=str(Path(cfg.output_dir) / f"round-{n}"),
        overwrite=True,
        model=replace(cfg.model, name=str(start)),
        template=replace(cfg.template, name="model"),
        data=replace(cfg.data, sources=[own, *sft]),
        training=replace(cfg.training, max_steps=i.max_steps, learning_rate=i.learning_rate, resume="no"),
        # the start is no base to show the in-context prompt; the second check tells a gain from a fit
        eval=replace(cfg.eval, incontext="", second_set=True),
    )


def mcnemar(before: list[bool], after: list[bool]) -> dict:
    """Exact two-sided McNemar test on paired verdicts: items right only after, right only before, p."""
    gained = sum(a and not b for b, a in zip(before, after))
    lost = sum(b and not a for b, a in zip(before, after))
    n = gained + lost
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n if n else 1.0
    return {"gained": gained, "lost": lost, "p": min(1.0, 2 * tail)}


def worse_kinds(sft: dict, now: dict) -> list[str]:
    """Kinds of a check whose share fell below the SFT model's 95% interval for that kind (issue 28's guard)."""
    return [kind for kind, v in sft["by_kind"].items()
            if v["n"] and now["by_kind"][kind]["correct"] / v["n"] < conformance.wilson(v["correct"], v["n"])[0]]  # fmt: skip


def _check(out: Path, sft: Path, file: str) -> dict:
    """One check's figures for a round: start and model, McNemar between them, and the kinds now worse than
    the SFT model's (the `base` of `sft`, round 1's folder); empty where the check was not run."""
    checked, first = instructions.read(out, file), instructions.read(sft, file).get("base")
    if not {"base", "trained"} <= set(checked) or first is None:
        return {}
    verdicts = {name: [r["correct"] for r in checked[name]["replies"]] for name in ("base", "trained")}
    return {
        "score": {k: checked[k]["score"] for k in ("base", "trained")},
        "by_kind": {
            k: {kind: v["correct"] for kind, v in checked[k]["by_kind"].items()} for k in ("base", "trained")
        },
        "mcnemar": mcnemar(verdicts["base"], verdicts["trained"]),
        "worse_than_sft": worse_kinds(first, checked["trained"]),
    }


def summary(out: Path, sft: Path | None = None) -> dict:
    """A finished round's figures from its run folder `out`: stops and loops on the held-out conversations, both
    instruction checks of its start (`base`) and its model (`trained`), and the guards, which compare with the
    SFT model: the `base` of `sft` (round 1's folder; `out` itself for round 1)."""
    sft = sft or out
    report, first = conformance.read_report(out), conformance.read_report(sft)["base"]
    checks = {"first": _check(out, sft, instructions.FILE), "second": _check(out, sft, second_set.FILE)}
    lengths = {"sft": first["reply_tokens_median"], "trained": report["trained"]["reply_tokens_median"]}
    guards = {  # issue 28's: a round that buys answers with stops, length or another kind is not kept
        "stop_rate >= 0.98": report["trained"]["stop_rate"] >= 0.98,
        "loop_rate <= 0.01": report["trained"]["loop_rate"] <= 0.01,
        "median reply within 50% of the SFT model's": abs(lengths["trained"] - lengths["sft"]) <= 0.5 * lengths["sft"],
        "no kind below the SFT model's interval": not any(c.get("worse_than_sft") for c in checks.values()),
    }  # fmt: skip
    first_check = checks["first"]
    return {
        "guards": guards,
        "stop_rate": report["trained"]["stop_rate"],
        "loop_rate": report["trained"]["loop_rate"],
        "reply_tokens_median": lengths,
        "check": first_check.get("score", {}),
        "check_by_kind": first_check.get("by_kind", {}),
        "mcnemar": first_check.get("mcnemar"),
        "second_check": checks["second"],
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def asked_in(cfg: config_lib.Config, n: int) -> list[tuple[str, str]]:
    """(kind, prompt) of round n: prompts_per_kind of each of improve.kinds, then improve.arithmetic_prompts more
    arithmetic ones of their own seeded draw (the others the same as without them), none twice."""
    i, varied = cfg.improve, cfg.improve.phrasings == "varied"
    asked = headroom.prompts(i.prompts_per_kind, cfg.eval.instructions, i.seed + n, i.kinds, varied)
    if i.arithmetic_prompts and "arithmetic" in i.kinds:
        more = headroom.prompts(
            i.arithmetic_prompts, cfg.eval.instructions, i.seed + 1000 + n, ["arithmetic"], varied
        )
        asked += [a for a in more if a not in asked]
    return asked


def one_round(cfg: config_lib.Config, n: int, start: Path, held: list[dict]) -> dict:
    """Sample, judge, train (improve.method) and evaluate round n from the `start` model; its figures."""
    from instructify.training import dpo
    from instructify.training.model import load

    i, folder, t0 = cfg.improve, Path(cfg.output_dir) / f"round-{n}", time.time()
    folder.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load(cfg.model, path=str(start))
    asked = asked_in(cfg, n)
    rows, samples, counts = own_rows(model, tokenizer, asked, cfg, i.seed + n)
    chat: list[dict] = []
    if i.chat_pairs and i.method == "rpo":  # rft mixes improve.sft_share of the SFT data instead
        talk = improve_chat.prompts(cfg, tokenizer, i.chat_pairs, i.seed + n)
        chat, chat_samples, chat_counts = improve_chat.pairs(model, tokenizer, talk, cfg, i.seed + n)
        _write_jsonl(folder / "chat-samples.jsonl", chat_samples)
        counts |= chat_counts
    del model
    _write_jsonl(folder / "own-samples.jsonl", samples)
    _write_jsonl(folder / "own-rows.jsonl", rows)
    fit = None
    if i.method == "rpo":
        pairs, pair_counts = pairs_of(samples, i.keep_per_prompt)
        counts |= pair_counts
        pairs += chat
        _write_jsonl(folder / "own-pairs.jsonl", pairs)
        fit = functools.partial(dpo.train, pairs=pairs)
    sampled = time.time()
    log.info("improve: round %d: %d prompts x %d samples: %s", n, len(asked), i.samples, counts)
    if not rows or counts.get("pairs") == 0:
        raise ValueError(
            f"improve: round {n} has nothing to train on ({counts}); more samples or prompts, or stop here"
        )
    pipeline.train(round_config(cfg, n, start, folder / "own-rows.jsonl"), eval_prompts=held, fit=fit)
    first = Path(cfg.output_dir) / "round-1"  # its start is the SFT model the guards compare with
    figures = summary(folder, first)
    took = {"seconds": round(time.time() - t0), "sampling_seconds": round(sampled - t0)}
    return {"round": n, "method": i.method, "prompts": len(asked), "counts": counts, **took, **figures}


def run(cfg: config_lib.Config) -> dict:
    """Every round of `improve`; improve.json in output_dir."""
    out = Path(cfg.output_dir)
    start = Path(cfg.improve.start or out / "model")
    if not (start / "config.json").is_file():
        raise FileNotFoundError(
            f"{start}: no model folder to improve; run `make train` first or set improve.start"
        )
    # kept: the last round whose guards pass
    result: dict = {"start": str(start), "kept": str(start), "rounds": []}
    # every round is measured on the held-out prompts of the SFT run (its own mix would hold out other rows)
    held_file = out / "eval_prompts.json"
    if not held_file.is_file():
        raise FileNotFoundError(f"{held_file}: missing; improve follows a `make train` run in output_dir")
    held = json.loads(held_file.read_text())
    for n in range(1, cfg.improve.rounds + 1):
        result["rounds"].append(one_round(cfg, n, start, held))
        if all(result["rounds"][-1]["guards"].values()):
            result["kept"] = str(out / f"round-{n}" / "model")
        (out / FILE).write_text(json.dumps(result, indent=1) + "\n")
        start = out / f"round-{n}" / "model"
    return result
