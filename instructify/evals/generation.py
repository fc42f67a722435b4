"""Batched generation shared by eval, the instruction check, synth, chat, serve and the training monitor.

One place for what every caller got slightly differently before: the ids generate() stops on, the pad id when a
tokenizer has none, padding, and cutting a row at its stop.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructify import kernels
from instructify.chat.template import IM_END
from instructify.evals import batching


def stop_ids_of(model: PreTrainedModel) -> set[int]:
    """The ids generate() stops on: the model's own generation_config, as a user's generate() would."""
    stop = model.generation_config.eos_token_id
    return set(stop if isinstance(stop, list) else [stop])


def pad_id_of(tokenizer: PreTrainedTokenizerBase, stop_ids: set[int] | None = None) -> int:
    """The tokenizer's pad id; else <|im_end|> or a stop id (the attention mask hides it: any id pads, and some
    instruct tokenizers have no pad token)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        return im_end
    return min(stop_ids) if stop_ids else 0


def classify(
    new_ids: list[int], stop_ids: set[int], im_end_id: int, max_new_tokens: int
) -> tuple[int, bool, bool]:
    """(reply length without the stop token, stopped on <|im_end|>, ran to max_new_tokens)."""
    for i, t in enumerate(new_ids):
        if t in stop_ids:
            return i, t == im_end_id, False
    return len(new_ids), False, len(new_ids) >= max_new_tokens


# A waiting prompt joins the running rows once this share of the batch is free (or nothing else is waiting): one
# prefill and one cache merge for several rows, not one per row that ends.
ADMIT_SHARE = 4
TRIM_EVERY = 128  # steps between handing the heap's free pages back (instructify/kernels.py)


@dataclass
class _Seq:
    index: int  # which prompt
    length: int  # its tokens in the cache: the next token's position
    last: int = 0


@contextlib.contextmanager
def _decoding_attention(model: PreTrainedModel):
    """SDPA while decoding on CPU. Eager attention trains chat-length rows fastest there
    (instructify/training/model.py), but decoding against a long cache is attention-bound: 50 rows under the
    360-token preamble took 109 s eager and 19 s with SDPA here."""
    impl = model.config._attn_implementation
    if impl == "eager" and model.device.type == "cpu":
        with contextlib.suppress(ValueError):  # some architectures have no SDPA path (Gemma 2: soft-capping)
            model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        model.set_attn_implementation(impl)


def generate_ids(
    model: PreTrainedModel,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    pad_id: int,
    done: Callable[[list[int]], tuple[list[int], bool]],
    sampling: dict | None = None,
    prefix: list[int] | None = None,
    matchers: list | None = None,
) -> list[list[int]]:
    """The new ids of each prompt: greedy unless `sampling` (do_sample, temperature, top_p; the model's top_k
    as generate() applies it) says otherwise. Continuously batched (instructify/evals/batching.py): up to
    `batch_size` rows decode together, shortest prompts first; `done(row)` is asked after each new token whether
    the row has ended (and where to cut it), and a row that has ended, or reached `max_new_tokens`, leaves at once
    while the next prompt takes its place. Each row is computed as if alone (tests/test_generation.py): the pads
    are masked and positions count only real tokens, while a row fits the sliding window of models that have one
    (Gemma 3: 512); beyond it, a row with k pads sees k fewer of its earliest tokens in the sliding layers.

    `prefix`: ids every prompt starts with (an in-context preamble), run once and its cache shared.
    `matchers`: each prompt's tool-call grammar (instructify/evals/tool_grammar.py; None: free)."""
    with _decoding_attention(model), torch.no_grad():
        return _continuous(
            model, prompts, max_new_tokens, batch_size, pad_id, done, sampling, prefix, matchers
        )


def _continuous(model, prompts, max_new_tokens, batch_size, pad_id, done, sampling, prefix, matchers):
    model.eval()
    shared = batching.Prefix.of(model, prefix) if prefix else None
    start = len(prefix) if prefix else 0
    do_sample = bool(sampling and sampling.get("do_sample"))
    how = (
        (True, sampling.get("temperature", 1.0), sampling.get("top_p", 1.0))
        if do_sample
        else (False, 1.0, 1.0)
    )
    top_k = model.generation_config.top_k if do_sample else None
    new: list[list[int]] = [[] for _ in prompts]
    waiting = deque(sorted(range(len(prompts)), key=lambda i: len(prompts[i])))
    batch, steps = batching.KVBatch(), 0

    def advance(logits: torch.Tensor, first: int) -> None:
        ended = set()
        for k, (row, scores) in enumerate(zip(batch.rows[first:], logits), start=first):
            matcher = matchers[row.index] if matchers is not None else None
            if matcher is not None:
                matcher.feed(new[row.index])
                matcher.mask_(scores)
            # sampling draws from the global random stream, as generate() does
            row.last = batching.choose(scores, how, top_k, None)
            new[row.index], stop = done(new[row.index] + [row.last])
            if stop or len(new[row.index]) >= max_new_tokens:
                ended.add(k)
        if ended:
            batch.keep([k for k in range(len(batch.rows)) if k not in ended])

    while waiting or batch.rows:
        free = batch_size - len(batch.rows)
        if waiting and (free >= max(1, batch_size // ADMIT_SHARE) or len(waiting) <= free):
            take = [waiting.popleft() for _ in range(min(free, len(waiting)))]
            rows = [_Seq(i, start + len(prompts[i])) for i in take]
            added, logits = batching.KVBatch.prefill(model, pad_id, [prompts[i] for i in take], rows, shared)
            first = len(batch.rows)
            batch.merge(added)
            advance(logits, first)
        if batch.rows:
            advance(batch.step(model), 0)
        steps += 1
        if steps % TRIM_EVERY == 0:
            kernels.release_free_memory()  # each step has its own shapes (instructify/kernels.py)
    kernels.release_free_memory()
    return new


def stop_at_ids(stop_ids: set[int]) -> Callable[[list[int]], tuple[list[int], bool]]:
    """`done` for chat replies: cut after the first stop id (kept, as generate() returns it)."""

    def done(row: list[int]) -> tuple[list[int], bool]:
        for i, t in enumerate(row):
            if t in stop_ids:
                return row[: i + 1], True
        return row, False

    return done


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], tools: list[dict] | None = None
) -> list[int]:
    """The prompt ids through the tokenizer's own chat template (sandboxed), with the generation prompt."""
    return tokenizer.apply_chat_template(
        messages, tools=tools or None, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]


def complete(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    stop: str,
    max_new_tokens: int,
    batch_size: int,
    sampling: dict | None = None,
    prefix: str = "",
) -> list[tuple[str, bool]]:
    """Plain-text continuations of `prefix` + each of `texts` (a base model under an in-context prompt), each cut
    at the first `stop` string: (text before it, whether it was reached). A row also ends on the model's own stop
    ids. The prefix is tokenised once, with the BOS, and its cache shared (`generate_ids`)."""
    stop_ids = stop_ids_of(model)
    head = tokenizer(prefix, add_special_tokens=True)["input_ids"]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    at_stop_id = stop_at_ids(stop_ids)

    def done(row: list[int]) -> tuple[list[int], bool]:
        row, ended = at_stop_id(row)
        if ended:
            return row, True
        # a stop string can span tokens: decode, and keep the ids up to the one completing it
        text = tokenizer.decode(row, skip_special_tokens=True)
        if stop not in text:
            return row, False
        for i in range(1, len(row) + 1):
            if stop in tokenizer.decode(row[:i], skip_special_tokens=True):
                return row[:i], True
        return row, True

    rows = generate_ids(
        model, prompts, max_new_tokens, batch_size, pad_id_of(tokenizer, stop_ids), done, sampling, head
    )
    out = []
    for row in rows:
        text = tokenizer.decode(row, skip_special_tokens=True)
        cut = text.find(stop)
        out.append((text[:cut] if cut >= 0 else text, cut >= 0 or bool(row) and row[-1] in stop_ids))
    return out
