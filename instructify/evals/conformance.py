"""Template conformance: does the model end its reply with `<|im_end|>`? Greedy generation on held-out prompts
with the model's own generation_config, so a broken eos shows up exactly as a user would see it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructify.chat.template import IM_END
from instructify.evals.batching import pad
from instructify.evals.generation import (
    chat_prompt_ids,
    classify,
    generate_ids,
    pad_id_of,
    stop_at_ids,
    stop_ids_of,
)


@dataclass
class Reply:
    prompt_id: str
    prior_turns: int
    text: str
    tokens: int
    stopped: bool  # ended on the <|im_end|> token before max_new_tokens
    runaway: bool  # hit max_new_tokens without any stop token
    leak: bool = False  # template structure in the text: <|im_start|>, <|im_end|> as text, a role header
    loop: bool = False  # one 8-token sequence three or more times, or one sentence twice (`looped`)

    @property
    def empty(self) -> bool:
        return self.stopped and not self.text.strip()

    @property
    def clean_stop(self) -> bool:
        return self.stopped and not self.empty and not self.leak


# A role header at a line start ("user\n", "Assistant:") means the model wrote the next turn itself.
ROLE_HEADER = re.compile(r"(^|\n)\s*(system|user|assistant)\s*(\n|:)", re.IGNORECASE)
LOOP_NGRAM, LOOP_REPEATS = 8, 3


def leaks(text: str) -> bool:
    return "<|im_start|>" in text or "<|im_end|>" in text or bool(ROLE_HEADER.search(text))


def loops(ids: list[int], n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> bool:
    """Whether some n-token sequence occurs `repeats` or more times (greedy decoding's repetition loops)."""
    counts: dict[tuple[int, ...], int] = {}
    for i in range(len(ids) - n + 1):
        key = tuple(ids[i : i + n])
        counts[key] = counts.get(key, 0) + 1
        if counts[key] >= repeats:
            return True
    return False


# Sentences end at . ! ? followed by space, or at a line break; one of at least 3 words said twice is a loop.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
SENTENCE_MIN_WORDS = 3


def repeats_sentence(text: str, min_words: int = SENTENCE_MIN_WORDS) -> bool:
    """Whether one sentence of at least `min_words` words occurs twice (case and punctuation aside): a small model's
    greedy reply often says the same thing again before it stops, which the 8-token count above lets through."""
    seen = set()
    for sentence in SENTENCE_END.split(text):
        words = re.findall(r"\w+", sentence.lower())
        if len(words) < min_words:
            continue
        key = " ".join(words)
        if key in seen:
            return True
        seen.add(key)
    return False


def looped(ids: list[int], text: str) -> bool:
    """A repetition loop (an 8-token sequence three times) or a sentence said twice."""
    return loops(ids) or repeats_sentence(text)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a proportion; sane at 0 and n, unlike the normal approximation."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the interval holds p: centre - half at k = 0 and centre + half at k = n differ from p by a rounding error
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def read_report(out_dir: Path) -> dict:
    """report.json of a run folder (one entry per evaluated model); empty before the first eval."""
    path = out_dir / "report.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[dict],
    max_new_tokens: int,
    batch_size: int,
    sampling: dict | None = None,
    constrained: bool = False,
) -> list[Reply]:
    """Each prompt's reply through the model's own chat template and stop ids (instructify/evals/generation.py), flagged.
    `constrained`: calls held to the schemas of each prompt's `offered` tools under its `choice` (default auto;
    instructify/evals/tool_grammar.py), one call only where its `parallel` is False."""
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    stop_ids = stop_ids_of(model)
    encoded = [chat_prompt_ids(tokenizer, p["messages"], p.get("tools")) for p in prompts]
    matchers = None
    if constrained:
        from instructify.evals.tool_grammar import Grammars

        grammars = Grammars.of(model, tokenizer, stop_ids)
        matchers = [
            grammars.matcher(p.get("offered"), p.get("choice", "auto"), parallel=p.get("parallel", True))
            for p in prompts
        ]
    new = generate_ids(
        model,
        encoded,
        max_new_tokens,
        batch_size,
        pad_id_of(tokenizer, stop_ids),
        stop_at_ids(stop_ids),
        sampling,
        matchers=matchers,
    )
    replies = []
    for i, p in enumerate(prompts):
        n, stopped, runaway = classify(new[i], stop_ids, im_end_id, max_new_tokens)
        text = tokenizer.decode(new[i][:n], skip_special_tokens=False)
        replies.append(
            Reply(p["id"], p["prior_turns"], text, n, stopped, runaway, leaks(text), looped(new[i][:n], text))
        )
    return replies


def summarize(replies: list[Reply]) -> dict:
    n = len(replies)
    stopped = sum(r.stopped for r in replies)
    runaway = sum(r.runaway for r in replies)
    lengths = sorted(r.tokens for r in replies)
    rates = {}
    for flag, count in (
        ("clean_stop", "clean_stopped"),
        ("empty", "empty"),
        ("leak", "leaked"),
        ("loop", "looped"),
    ):
        k = sum(getattr(r, flag) for r in replies)
        rates.update({f"{flag}_rate": k / n if n else 0.0, f"{flag}_rate_ci95": wilson(k, n), count: k})
    return {
        "n": n,
        "stop_rate": stopped / n if n else 0.0,
        "stop_rate_ci95": wilson(stopped, n),
        "stopped": stopped,
        "runaway_rate": runaway / n if n else 0.0,
        "runaway_rate_ci95": wilson(runaway, n),
        "runaway": runaway,
        **rates,
        "reply_tokens_median": lengths[n // 2] if n else 0,
        "reply_tokens": length_distribution([r.tokens for r in replies]),
        "reply_tokens_by_prior_turns": {
            str(k): length_distribution([r.tokens for r in replies if r.prior_turns == k])
            for k in sorted({r.prior_turns for r in replies})
        },
    }


def length_distribution(lengths: list[int]) -> dict:
    """n, mean and quantiles (nearest rank) of reply lengths in tokens."""
    xs = sorted(lengths)
    if not xs:
        return {"n": 0}
    q = lambda f: xs[min(len(xs) - 1, int(f * len(xs)))]
    return {
        "n": len(xs),
        "mean": round(sum(xs) / len(xs), 1),
        "p10": q(0.1),
        "median": q(0.5),
        "p90": q(0.9),
        "max": xs[-1],
    }


def _reply_span(tokenizer: PreTrainedTokenizerBase, messages: list[dict], reply: str, im_end_id: int):
    """(ids, first, last): the prompt plus its gold reply, and the positions of the reply up to its <|im_end|>.
    Found as what follows the generation prompt, so any ChatML-rendering template works, markers or not."""
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": reply}], tokenize=True, return_dict=True
    )
    prompt, ids = prompt["input_ids"], full["input_ids"]
    if ids[: len(prompt)] != prompt or im_end_id not in ids[len(prompt) :]:
        return None
    return ids, len(prompt), ids.index(im_end_id, len(prompt))


@torch.no_grad()
def teacher_forced(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[dict], batch_size: int = 16
) -> dict:
    """No generation: each prompt followed by its gold reply, scored. Loss on the reply's tokens (its <|im_end|>
    included), and at the end of the reply the probability of <|im_end|> and whether it is the top token.
    Only the reply positions are projected onto the vocabulary (instructify/modules/head.py): the full-vocabulary logits at
    every position cost more than the rest of the forward for a 262k vocabulary."""
    from instructify.modules import head

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT during training
    was_training = base.training
    base.eval()
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    rows = [_reply_span(tokenizer, p["messages"], p["reference"], im_end_id) for p in prompts]
    rows = sorted((r for r in rows if r), key=lambda r: len(r[0]))  # similar lengths: little padding
    weight, indices, trainable = head.output_layer(base)
    scale, softcap = head.logit_transform(base.config)
    nll, n_tokens, probs, top1 = 0.0, 0, [], []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        padded = pad([ids for ids, _, _ in batch], pad_id_of(tokenizer), base.device, left=False)
        hidden = getattr(base, base.base_model_prefix)(**padded, use_cache=False).last_hidden_state
        # right padding: positions are as unpadded; position p predicts token p + 1
        where = [(row, p) for row, (_, first, last) in enumerate(batch) for p in range(first - 1, last)]
        targets = torch.tensor([batch[row][0][p + 1] for row, p in where], device=hidden.device)
        selected = (hidden[[row for row, _ in where], [p for _, p in where]] * scale).to(weight.dtype)
        log_probs, _, is_top1 = head.score(selected, targets, weight, indices, trainable, softcap)
        nll -= log_probs.float().sum().item()
        n_tokens += len(where)
        ends = torch.tensor([i for i, (row, p) in enumerate(where) if p == batch[row][2] - 1])
        probs += log_probs[ends].float().exp().tolist()
        top1 += is_top1[ends].int().tolist()
    base.train(was_training)
    k = len(probs)
    return {
        "teacher_forced_n": k,
        "eval_loss": nll / max(n_tokens, 1),
        "stop_token_prob": sum(probs) / max(k, 1),
        "stop_token_top1": sum(top1) / max(k, 1),
        "stop_token_top1_ci95": wilson(sum(top1), k),
    }


def evaluate(
    model,
    tokenizer,
    prompts: list[dict],
    max_new_tokens: int,
    batch_size: int,
    with_teacher_forced: bool = False,
    sampling: dict | None = None,
) -> tuple[dict, list[Reply]]:
    replies = generate(model, tokenizer, prompts, max_new_tokens, batch_size, sampling)
    metrics = summarize(replies)
    if with_teacher_forced:
        metrics.update(teacher_forced(model, tokenizer, prompts))
    return metrics, replies


def write_report(out_dir: Path, name: str, metrics: dict, replies: list[Reply], prompts: list[dict]) -> Path:
    """Merge this model's metrics into `report.json` (one entry per model) and its replies into samples."""
    by_id = {p["id"]: p for p in prompts}
    entry = {
        **metrics,
        "samples": [
            {"prompt": by_id[r.prompt_id]["messages"][-1]["content"], "reply": r.text, "stopped": r.stopped}
            for r in replies[:5]
        ],
    }
    samples = [{**r.__dict__, "empty": r.empty, "clean_stop": r.clean_stop,
                "messages": by_id[r.prompt_id]["messages"]} for r in replies]  # fmt: skip
    return put_report(out_dir, name, entry, samples)


def put_report(out_dir: Path, name: str, entry: dict, samples: list[dict]) -> Path:
    """report.json's entry for `name` and its samples-<name>.jsonl, as write_report makes them (or stored)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    report = read_report(out_dir)
    report[name] = entry
    path.write_text(json.dumps(report, indent=2))
    with (out_dir / f"samples-{name}.jsonl").open("w") as f:
        for s in samples:
            f.write(json.dumps(s) + "\n")
    return path


def read_samples(out_dir: Path, name: str) -> list[dict]:
    path = out_dir / f"samples-{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
