"""LM head that scores only the trained positions and trains only the added token rows of the output layer.

Why our own (replacing the one TRL's SFTTrainer patches in): with trl 1.16 / peft 0.21 TRL's fused head
(1) crashes on a tied-embedding model with PEFT trainable tokens (it reads `lm_head.bias`), and (2) off CUDA it
projects every position through the whole vocabulary, in fp32, and builds a full-vocabulary weight gradient for
the trainable-token head: ~25 s per step for Gemma 3 270M on 2 CPU cores. Here the projection runs only where
labels are not -100, in the weights' dtype, and the gradient reaches the output layer only through the trainable
rows (`<|im_end|>` among them), so the model still learns to emit the terminator.

It keeps TRL's contract: `model(..., labels=..., fused_lm_head=True)` returns per-token `log_probs`, `entropy`,
`is_top1` and `label_mask`, zero where the label is -100. Without `fused_lm_head` the model's own forward runs, so
generation is unchanged.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from trl.trainer.utils import FusedCausalLMOutput

# Logit elements per projected chunk (rows x vocabulary): 256 rows at a 262k vocabulary, 128 MiB of bf16 logits.
# Each chunk reads the whole output weight (335 MB for Gemma 3): 64-row chunks made a CPU step 20% slower.
CHUNK_ELEMENTS = 2**26
# Rows x vocabulary of one block of fp32 softmax arithmetic: 8 MiB, in cache (8 rows at a 262k vocabulary).
BLOCK_ELEMENTS = 2**21
# The chunks' logits are kept for the backward (in the weights' dtype) up to this many elements (1 GiB in bf16);
# beyond it they are recomputed there, one more projection, as TRL's chunked head does.
KEEP_LOGIT_ELEMENTS = 2**29


def output_layer(model: PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(frozen weight, indices of trainable rows, trainable rows) of the output layer; no rows for a plain head."""
    head = model.get_output_embeddings()
    adapter = getattr(head, "token_adapter", None)  # peft TrainableTokensWrapper (tied or not)
    if adapter is None or adapter.disable_adapters or adapter.merged or not adapter.active_adapters:
        return head.weight, None, None
    indices, rows = [], []
    for name in adapter.active_adapters:
        if name in adapter.token_indices:
            indices += list(adapter.token_indices[name])
            rows.append(adapter.trainable_tokens_delta[name])
    if not indices:
        return adapter.base_layer.weight, None, None
    weight = adapter.base_layer.weight
    return weight, torch.tensor(indices, device=weight.device), torch.cat(rows)


def project(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    indices: torch.Tensor | None,
    rows: torch.Tensor | None,
    softcap: float | None,
) -> torch.Tensor:
    """logits = hidden @ W.T where W is `weight` with `rows` in place at `indices` (the merged output layer)."""
    logits = F.linear(hidden, weight.detach())
    if indices is not None:
        logits = logits.index_copy(1, indices, F.linear(hidden, rows.to(hidden.dtype)))
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return logits


class _TrainedLogProbs(torch.autograd.Function):
    """log p(target), entropy and top-1 hit per row, chunk by chunk, never holding [rows, vocab] in fp32.

    Only log p(target) has a gradient, and it has a closed form: d log p_t / d z = onehot(t) - softmax(z), so the
    backward needs the chunk's logits and log-sum-exp, not autograd's saved fp32 log-softmax (twice the memory of
    the bf16 logits). The gradient reaches the hidden states and the trainable rows; the frozen weight gets none.
    The projection runs on chunks of many rows (the weight is read once per chunk); the fp32 softmax arithmetic
    runs on blocks of a few rows that stay in the CPU cache (on the quickstart the head took 2.1 s of a 4.7 s
    step, most of it in memory-bound passes over [rows, vocab])."""

    @staticmethod
    def forward(ctx, hidden, targets, weight, indices, rows, softcap):
        chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
        block = max(1, BLOCK_ELEMENTS // weight.shape[0])
        keep = hidden.shape[0] * weight.shape[0] <= KEEP_LOGIT_ELEMENTS
        n = hidden.shape[0]
        log_probs, entropy, lse = (hidden.new_empty(n, dtype=torch.float32) for _ in range(3))
        is_top1 = torch.empty(n, dtype=torch.bool, device=hidden.device)
        kept = []
        for i in range(0, n, chunk):
            logits = project(hidden[i : i + chunk], weight, indices, rows, softcap)
            for j in range(0, logits.shape[0], block):
                r = slice(i + j, i + min(j + block, logits.shape[0]))
                t = targets[r, None]
                z = logits[j : j + block].to(torch.float32, copy=True)  # worked on in place
                top, top_index = z.max(-1)
                is_top1[r] = top_index == t.squeeze(1)
                z.sub_(top[:, None])  # z - max: exp cannot overflow
                e = z.exp()
                total = e.sum(-1)
                log_total = total.log()
                lse[r] = top + log_total
                log_probs[r] = z.gather(1, t).squeeze(1) - log_total
                entropy[r] = log_total - e.mul_(z).sum(-1) / total
            if keep:
                kept.append(logits)
        ctx.softcap, ctx.chunk, ctx.block = softcap, chunk, block
        ctx.save_for_backward(hidden, targets, weight, indices, rows, lse, *kept)
        ctx.mark_non_differentiable(entropy, is_top1)
        return log_probs, entropy, is_top1

    @staticmethod
    def backward(ctx, grad_log_probs, _entropy, _top1):
        hidden, targets, weight, indices, rows, lse, *kept = ctx.saved_tensors
        if grad_log_probs is None:
            return None, None, None, None, None, None
        chunk, block, softcap = ctx.chunk, ctx.block, ctx.softcap
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_rows = torch.zeros_like(rows) if rows is not None and ctx.needs_input_grad[4] else None
        g_all = grad_log_probs.float()
        for n, i in enumerate(range(0, hidden.shape[0], chunk)):
            h = hidden[i : i + chunk]
            with torch.no_grad():
                logits = kept[n] if kept else project(h, weight, indices, rows, softcap)
            grad = torch.empty_like(logits)
            for j in range(0, logits.shape[0], block):
                r = slice(i + j, i + min(j + block, logits.shape[0]))
                g = g_all[r, None]
                z = logits[j : j + block].to(torch.float32, copy=True)  # worked on in place
                through_cap = 1 - (z / softcap) ** 2 if softcap else None  # d softcap*tanh(x/softcap) / dx
                z.sub_(lse[r, None]).exp_().mul_(-g)  # -g * softmax
                z.scatter_add_(1, targets[r, None], g)  # + g at the target
                if through_cap is not None:
                    z.mul_(through_cap)
                grad[j : j + block] = z
            if indices is not None:
                grad_of_rows = grad[:, indices]
                grad[:, indices] = 0  # those columns came from `rows`, not from `weight`
                if grad_rows is not None:
                    grad_rows += (grad_of_rows.t() @ h).to(rows.dtype)
            if grad_hidden is not None:
                grad_hidden[i : i + chunk] = grad @ weight
                if indices is not None:
                    grad_hidden[i : i + chunk] += grad_of_rows @ rows.to(weight.dtype)
        return grad_hidden, None, None, None, grad_rows, None


def score(
    hidden: torch.Tensor, targets: torch.Tensor, weight, indices, rows, softcap
) -> tuple[torch.Tensor, ...]:
    """Per-row log p(target) (differentiable), entropy and top-1 hit."""
    return _TrainedLogProbs.apply(hidden, targets, weight.detach(), indices, rows, softcap)


def logit_transform(config) -> tuple[float, float | None]:
    """(scale, softcap) of a family's logits: logits = softcap * tanh(scale * (h @ W.T) / softcap). Granite divides
    by `logits_scaling`, Cohere multiplies by `logit_scale`, Gemma 2/3 cap with `final_logit_softcapping`. The
    scale is applied to the hidden state, the same product, so the projection and its gradient stay as they are."""
    text_config = config.get_text_config()
    scale = 1.0
    if getattr(text_config, "logits_scaling", None) not in (None, 1, 1.0):
        scale = 1.0 / text_config.logits_scaling
    if getattr(text_config, "logit_scale", None) not in (None, 1, 1.0):
        scale *= text_config.logit_scale
    for attr in ("output_multiplier", "lm_head_multiplier"):
        if getattr(text_config, attr, None) not in (None, 1, 1.0):
            raise NotImplementedError(
                f"{text_config.model_type}: logit scaling `{attr}` is not supported yet"
            )
    return scale, getattr(text_config, "final_logit_softcapping", None)


def decisions(shift_labels: torch.Tensor, after: list[list[int]]) -> torch.Tensor:
    """[batch, seq] bool: the targets where a reply decides its course, the first trained token of each reply
    (text or a call) and the token right after each trained `after` id sequence (after `</tool_call>`: another
    call or `<|im_end|>`)."""
    mask = shift_labels != -100
    out = mask & ~F.pad(mask[:, :-1], (1, 0), value=False)
    for ids in after:
        k = len(ids)
        if not k or shift_labels.shape[1] <= k:
            continue
        seq = torch.tensor(ids, device=shift_labels.device)
        # windows ending just before each target (equal ids are trained ones: -100 is never an id)
        hit = shift_labels.unfold(1, k, 1)[:, :-1].eq(seq).all(-1)
        out[:, k:] |= hit & mask[:, k:]
    return out


def install(model: PreTrainedModel, decision_weight: float = 1.0, after: list[list[int]] = ()) -> None:
    """Patch `model` (the transformers model, under any PEFT wrapper) with the trained-positions head. In training,
    the loss of the decision targets (`decisions`) counts `decision_weight` times: one token of a ~35-token call
    reply chooses between a call and text, and at weight 1 a run learned the call rate, not when to call
    (p(`<tool_call>`) 0.41 on trained no-tool requests against 0.56 on trained single calls: docs/tools.md)."""
    own_forward = types.MethodType(type(model).forward, model)
    scale, softcap = logit_transform(model.config)

    def forward(
        self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs
    ):
        if not fused_lm_head:
            extra = {"labels": labels, "shift_labels": shift_labels, "num_items_in_batch": num_items_in_batch}
            return own_forward(*args, **kwargs, **{k: v for k, v in extra.items() if v is not None})
        kwargs["use_cache"] = False
        hidden = getattr(self, self.base_model_prefix)(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, shift_labels = hidden[:, :-1], labels[:, 1:]
        mask = shift_labels != -100
        weight, indices, rows = output_layer(self)
        log_probs, entropy, is_top1 = score(
            (hidden[mask] * scale).to(weight.dtype), shift_labels[mask], weight, indices, rows, softcap
        )

        def spread(x: torch.Tensor) -> torch.Tensor:
            # back to [batch, seq]: zero where not trained, and connected to the graph even if nothing is
            return x.new_zeros(mask.shape).masked_scatter(mask, x)

        log_probs = spread(log_probs)
        if self.training and decision_weight != 1.0:
            # TRL's loss is -sum(log_probs) / tokens: scaling the decision targets' terms weights their loss
            weights = 1 + (decision_weight - 1) * decisions(shift_labels, after).to(log_probs.dtype)
            log_probs = log_probs * weights
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / denominator,
            log_probs=log_probs,
            entropy=spread(entropy),
            is_top1=spread(is_top1),
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)
