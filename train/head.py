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
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from trl.trainer.utils import FusedCausalLMOutput

# Rows of logits per chunk: bounds the fp32 [rows, vocab] buffers to ~1 GiB at a 262k vocabulary.
MAX_LOGIT_ELEMENTS = 2**28


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


def _score(hidden, targets, weight, indices, rows, softcap):
    logp = torch.log_softmax(project(hidden, weight, indices, rows, softcap).float(), dim=-1)
    log_probs = logp.gather(1, targets[:, None]).squeeze(1)
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
        is_top1 = logp.argmax(-1) == targets
    return log_probs, entropy, is_top1


def score(
    hidden: torch.Tensor, targets: torch.Tensor, weight, indices, rows, softcap
) -> tuple[torch.Tensor, ...]:
    """Per-row log p(target), entropy and top-1 hit, in chunks recomputed on backward to bound memory."""
    chunk = max(1, MAX_LOGIT_ELEMENTS // weight.shape[0])
    if hidden.shape[0] <= chunk:
        return _score(hidden, targets, weight, indices, rows, softcap)
    parts = [
        checkpoint(
            _score,
            hidden[i : i + chunk],
            targets[i : i + chunk],
            weight,
            indices,
            rows,
            softcap,
            use_reentrant=False,
        )
        for i in range(0, hidden.shape[0], chunk)
    ]
    return tuple(torch.cat(p) for p in zip(*parts))


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
