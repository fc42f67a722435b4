"""Continuous batching: rows decode one token per step against one KV cache, a row that ends leaves at once and a
waiting prompt takes its place. The serve engine's loop and the evaluations' (instructify/evals/generation.py)
share it. Our own code (the engine's since `serve` began): generate() decodes a batch until its slowest row
ends; transformers' `generate_batch` (paged attention, a manager thread) was not tried here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def pad(rows: list[list[int]], pad_id: int, device, left: bool) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of rows padded to one width: on the left for generation (the new tokens
    follow every prompt directly), on the right for scoring (positions stay as unpadded)."""
    width = max(len(r) for r in rows)
    side = lambda r, fill: [fill] * (width - len(r))
    return {
        "input_ids": torch.tensor(
            [side(r, pad_id) + r if left else r + side(r, pad_id) for r in rows], device=device
        ),
        "attention_mask": torch.tensor(
            [side(r, 0) + [1] * len(r) if left else [1] * len(r) + side(r, 0) for r in rows], device=device
        ),
    }


@dataclass
class Prefix:
    """Ids every prompt starts with (an in-context preamble) and their cache, computed once."""

    ids: list[int]
    cache: DynamicCache

    @classmethod
    @torch.no_grad()
    def of(cls, model: PreTrainedModel, ids: list[int]) -> Prefix:
        # no config: full layers, which merge and pad alike (the mask does the sliding)
        cache = DynamicCache()
        model(torch.tensor([ids], device=model.device), cache=cache, use_cache=True, logits_to_keep=1)
        return cls(ids, cache)


class KVBatch:
    """The running rows and their DynamicCache, padded on the left; `mask` [rows, cache length] is 0 on each row's
    padding. It grows, merges and shrinks along the batch dimension between steps. A row is anything with
    `length` (its tokens in the cache: the next token's position) and `last` (its latest token)."""

    def __init__(self, rows=None, cache: DynamicCache | None = None, mask: torch.Tensor | None = None):
        self.rows: list = rows or []
        self.cache, self.mask = cache, mask

    @classmethod
    @torch.no_grad()
    def prefill(
        cls,
        model: PreTrainedModel,
        pad_id: int,
        prompts: list[list[int]],
        rows: list,
        prefix: Prefix | None = None,
    ) -> tuple[KVBatch, torch.Tensor]:
        """A batch of `rows` with their prompts through the model (after `prefix`'s cache, shared); and each
        row's scores for its first token. Each row's `length` must count its prefix and prompt."""
        inputs = pad(prompts, pad_id, model.device, left=True)
        mask, start = inputs["attention_mask"], 0
        if prefix is None:
            cache = DynamicCache()
        else:  # the pads sit between prefix and prompt, masked; positions count only real tokens
            cache = copy.deepcopy(prefix.cache)
            cache.batch_repeat_interleave(len(prompts))
            start = len(prefix.ids)
            mask = torch.cat([mask.new_ones(len(prompts), start), mask], 1)
        positions = start + (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return cls(rows, cache, mask), _last_scores(model, inputs["input_ids"], mask, positions, cache)

    def merge(self, new: KVBatch) -> None:
        """Append the prefilled rows to the running batch, padding the shorter cache on the left."""
        if not self.rows:
            self.rows, self.cache, self.mask = new.rows, new.cache, new.mask
            return
        width = max(self.mask.shape[1], new.mask.shape[1])
        for old, added in zip(self.cache.layers, new.cache.layers):
            old.keys = torch.cat([_left(old.keys, 2, width), _left(added.keys, 2, width)])
            old.values = torch.cat([_left(old.values, 2, width), _left(added.values, 2, width)])
        self.mask = torch.cat([_left(self.mask, 1, width), _left(new.mask, 1, width)])
        self.rows += new.rows

    @torch.no_grad()
    def step(self, model: PreTrainedModel) -> torch.Tensor:
        """Each row's last token through the model; each row's scores for its next one."""
        ids = torch.tensor([[r.last] for r in self.rows], device=model.device)
        mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        positions = torch.tensor([[r.length] for r in self.rows], device=model.device)
        scores = _last_scores(model, ids, mask, positions, self.cache)
        self.mask = mask
        for row in self.rows:
            row.length += 1
        return scores

    def keep(self, keep: list[int]) -> None:
        """Only these rows go on; cache columns that are padding in every remaining row are dropped."""
        self.rows = [self.rows[k] for k in keep]
        if not self.rows:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask = self.mask[index]
        start = int((self.mask.cumsum(-1) == 0).sum(-1).min())  # the shortest left padding
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]


def _last_scores(model: PreTrainedModel, ids, mask, positions, cache: DynamicCache) -> torch.Tensor:
    """Each row's scores [rows, vocab] for the token after its last, the cache extended in place."""
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1].float()


def _left(t: torch.Tensor, dim: int, width: int) -> torch.Tensor:
    """`t` padded with zeros on the left of dimension `dim` to `width`."""
    return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 1 - dim) + (width - t.shape[dim], 0))


def generator(device: torch.device, do_sample: bool, seed: int | None) -> torch.Generator | None:
    """A row's own random stream when it samples (None: greedy, or the global stream when seed is None)."""
    if not do_sample:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(seed if seed is not None else torch.seed())
    return g


def choose(scores: torch.Tensor, sampling: tuple, top_k: int | None, gen: torch.Generator | None) -> int:
    """The next token: the best one, or one drawn as generate() would (temperature, the model's top_k, top_p)."""
    do_sample, temperature, top_p = sampling
    if not do_sample:
        return int(scores.argmax())
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    scores = warpers(None, scores[None])[0]
    return int(torch.multinomial(scores.softmax(-1), 1, generator=gen))
