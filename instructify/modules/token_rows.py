"""Input embedding with PEFT trainable token rows, looked up without rebuilding the matrix.

Why our own: peft 0.21's TrainableTokensLayer builds `weight.index_copy(rows)` (the whole 262k x 640 matrix for
Gemma 3, 335 MB in bf16) on every forward and backpropagates a dense matrix-sized gradient into it, only to keep
the few new rows. Here the frozen matrix is looked up as is and the rows are put in place where their ids occur:
the same values (the rows cast to the weight's dtype, then the layer's embed_scale, as PEFT does), gradients only
for the rows. Merged layers, several adapters or an exotic embedding fall back to PEFT's own forward.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def _lookup(layer, x: torch.Tensor) -> torch.Tensor:
    name = layer.active_adapters[0]
    base = layer.base_layer
    weight = base.weight
    indices = torch.as_tensor(layer.token_indices[name], device=x.device)
    rows = layer.trainable_tokens_delta[name]
    out = F.embedding(x, weight.detach())
    slot = torch.full((weight.shape[0],), -1, dtype=torch.long, device=x.device)
    slot[indices] = torch.arange(len(indices), device=x.device)
    slot = slot[x]  # row of each input id among the trainable ones, -1 elsewhere
    out = torch.where((slot >= 0)[..., None], rows.to(weight.dtype)[slot.clamp(min=0)], out)
    scale = layer._get_embed_scale()
    return out * scale.to(out.dtype) if scale is not None else out


def install(model: torch.nn.Module) -> int:
    """Give every trainable-token layer over an nn.Embedding the lookup above; returns how many were patched."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    patched = 0
    for layer in model.modules():
        if not isinstance(layer, TrainableTokensLayer) or not isinstance(
            layer.base_layer, torch.nn.Embedding
        ):
            continue
        base = layer.base_layer
        if base.max_norm is not None or base.sparse or base.scale_grad_by_freq:
            continue
        peft_forward = layer.forward

        def forward(self, x, *args, _peft_forward=peft_forward, **kwargs):
            plain = not self.disable_adapters and not self.merged and len(self.active_adapters) == 1
            if plain and not args and not kwargs and self.active_adapters[0] in self.token_indices:
                return _lookup(self, x)
            return _peft_forward(x, *args, **kwargs)

        layer.forward = types.MethodType(forward, layer)
        patched += 1
    return patched
