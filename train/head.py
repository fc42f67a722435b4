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

# Logit elements per chunk (rows x vocabulary): ~64 rows at a 262k vocabulary, so the fp32 temporaries of a chunk
# stay near 256 MiB however many positions are trained.
CHUNK_ELEMENTS = 2**24
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
    the bf16 logits, and a second full pass). The gradient reaches the hidden states and the trainable rows; the
    frozen weight gets none."""

    @staticmethod
    def forward(ctx, hidden, targets, weight, indices, rows, softcap):
        chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
        keep = hidden.shape[0] * weight.shape[0] <= KEEP_LOGIT_ELEMENTS
        log_probs, entropy, is_top1, lse, kept = [], [], [], [], []
        for i in range(0, hidden.shape[0], chunk):
            logits = project(hidden[i : i + chunk], weight, indices, rows, softcap)
            z = logits.float()
            t = targets[i : i + chunk, None]
            lse.append(torch.logsumexp(z, -1))
            log_probs.append(z.gather(1, t).squeeze(1) - lse[-1])
            is_top1.append(z.argmax(-1) == t.squeeze(1))
            p = (z - lse[-1][:, None]).exp_()
            entropy.append(lse[-1] - p.mul_(z).sum(-1))
            if keep:
                kept.append(logits)
        ctx.softcap, ctx.chunk = softcap, chunk
        ctx.save_for_backward(hidden, targets, weight, indices, rows, torch.cat(lse), *kept)
        entropy, is_top1 = torch.cat(entropy), torch.cat(is_top1)
        ctx.mark_non_differentiable(entropy, is_top1)
        return torch.cat(log_probs), entropy, is_top1

    @staticmethod
    def backward(ctx, grad_log_probs, _entropy, _top1):
        hidden, targets, weight, indices, rows, lse, *kept = ctx.saved_tensors
        if grad_log_probs is None:
            return None, None, None, None, None, None
        chunk, softcap = ctx.chunk, ctx.softcap
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_rows = torch.zeros_like(rows) if rows is not None and ctx.needs_input_grad[4] else None
        for n, i in enumerate(range(0, hidden.shape[0], chunk)):
            h, g = hidden[i : i + chunk], grad_log_probs[i : i + chunk].float()
            with torch.no_grad():
                logits = kept[n] if kept else project(h, weight, indices, rows, softcap)
            z = logits.float()
            grad = (z - lse[i : i + chunk, None]).exp_().mul_(-g[:, None])  # -g * softmax
            grad.scatter_add_(1, targets[i : i + chunk, None], g[:, None])  # + g at the target
            if softcap:
                grad.mul_(1 - (z / softcap) ** 2)  # through softcap * tanh(x / softcap)
            grad = grad.to(weight.dtype)
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


def install(model: PreTrainedModel) -> None:
    """Patch `model` (the transformers model, under any PEFT wrapper) with the trained-positions head."""
    own_forward = types.MethodType(type(model).forward, model)
    text_config = model.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    for attr in ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        if getattr(text_config, attr, None) not in (None, 1, 1.0):
            raise NotImplementedError(
                f"{text_config.model_type}: logit scaling `{attr}` is not supported yet"
            )

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
            hidden[mask].to(weight.dtype), shift_labels[mask], weight, indices, rows, softcap
        )

        def spread(x: torch.Tensor) -> torch.Tensor:
            # back to [batch, seq]: zero where not trained, and connected to the graph even if nothing is
            return x.new_zeros(mask.shape).masked_scatter(mask, x)

        log_probs = spread(log_probs)
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / denominator,
            log_probs=log_probs,
            entropy=spread(entropy),
            is_top1=spread(is_top1),
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)
