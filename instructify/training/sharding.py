"""The adapter saved whole when the model is sharded (FSDP2, DeepSpeed ZeRO: configs/accelerate/fsdp2.yaml,
zero2.yaml, zero3.yaml).

Why our own: `peft_model.save_pretrained` on rank 0 reads that rank's parameters: FSDP2 shards (DTensors) and ZeRO-3
placeholders, unless it is given the gathered state dict. transformers' Trainer.save_model gathers for whole
models the same way (accelerator.get_state_dict); we save only LoRA and the token rows, so we call it ourselves.

Our head (instructify/modules/head.py) and row lookup (instructify/modules/token_rows.py) read weights outside the modules that own them and
need nothing here: under FSDP2 the root unit's weights (embedding, output layer, token rows) are whole during the
root's forward, where both run; under ZeRO-3 DeepSpeed gathers a parameter read during any module's forward and
registers it with that module (deepspeed/runtime/zero/parameter_offload.py, ZeROOrderedDict). tests/test_sharding.py
checks both with every weight sharded (two processes on the CPU).
"""

from __future__ import annotations

import torch


def adapter_state_dict(accelerator, model, engine=None) -> dict[str, torch.Tensor] | None:
    """The whole model's state dict, gathered, under FSDP or DeepSpeed (from the engine: ZeRO-3 needs
    zero3_save_16bit_model, as our zero3.yaml sets), for `save_pretrained(state_dict=...)`; None where
    `model.state_dict()` is already whole (one process, DDP). A collective: every rank must call it."""
    kind = accelerator.state.distributed_type.value
    if kind == "DEEPSPEED":
        return accelerator.get_state_dict(engine if engine is not None else model)
    if kind == "FSDP":
        return accelerator.get_state_dict(model)
    return None
