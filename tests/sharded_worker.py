"""One rank of a sharded run on the CPU (gloo), for test_sharding.py:

    python -m torch.distributed.run --nproc_per_node 2 tests/sharded_worker.py fsdp2|zero3 MODEL_DIR OUT_DIR

Builds the tiny model with ChatML tokens, LoRA and trainable token rows, our row lookup and our head, twice: as is
(every rank the same, the reference) and sharded (FSDP2 `fully_shard` per decoder layer and at the root, as
accelerate's TRANSFORMER_BASED_WRAP does; or a DeepSpeed ZeRO-3 engine with every parameter partitioned before each
forward, as for weights above the persistence threshold). Trains both two steps on the same batch (plain SGD), then writes `OUT_DIR/result.json` (losses, largest gradient
difference), both adapters (`reference/`, and `sharded/` saved the way sft.train saves it: instructify/training/sharding.py's
adapter_state_dict, then rank 0's save_pretrained) and the sharded run's trained values gathered (`live`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from peft import get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instructify.chat import template  # noqa: E402
from instructify.config import LoraConfig  # noqa: E402
from instructify.modules import (
    head,  # noqa: E402
    token_rows,  # noqa: E402
)
from instructify.training import sharding  # noqa: E402
from instructify.training.model import lora_config  # noqa: E402

STEPS = 2  # the second step's loss is after one update


def build(path: str):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokens = template.add_chat_tokens(model, AutoTokenizer.from_pretrained(path))
    torch.manual_seed(0)
    pm = get_peft_model(model, lora_config(LoraConfig(r=4, alpha=8), tokens.new_token_ids, model))
    with torch.no_grad():  # non-zero LoRA B and token rows, so every path carries a gradient
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    token_rows.install(pm)
    head.install(pm.get_base_model())
    return pm


def batch(vocab: int, im_end: int) -> dict:
    torch.manual_seed(1)  # the same on every rank
    ids = torch.randint(5, vocab - 2, (2, 12))
    ids[:, 5] = im_end  # a new token in the input and among the labels: its rows train both ways
    return {"input_ids": ids, "labels": ids.clone(), "fused_lm_head": True}


def trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def main() -> int:
    kind, path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    rank = int(os.environ["RANK"])
    ref = build(path)
    inputs = batch(ref.config.vocab_size, ref.config.vocab_size - 1)  # the last id: a new ChatML token
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable(ref), lr=0.5)
    ref_losses, ref_grads = [], None
    for _ in range(STEPS):
        loss = ref(**inputs).loss
        loss.backward()
        ref_grads = ref_grads or [p.grad.clone() for p in trainable(ref)]
        optimizer.step()
        optimizer.zero_grad()
        ref_losses.append(loss.item())

    sharded = build(path)
    losses, grads = [], None
    if kind == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for layer in sharded.get_base_model().model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        optimizer = torch.optim.SGD(trainable(sharded), lr=0.5)
        for _ in range(STEPS):
            loss = sharded(**inputs).loss
            loss.backward()
            grads = grads or [p.grad.full_tensor() for p in trainable(sharded)]
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        accelerator = SimpleNamespace(state=SimpleNamespace(distributed_type=SimpleNamespace(value="FSDP")))
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        # accelerate's own get_state_dict, FSDP2 branch (its FSDP plugin does not run on a CPU)
        accelerator.get_state_dict = lambda model: Accelerator.get_state_dict(
            SimpleNamespace(distributed_type=DistributedType.FSDP, is_fsdp2=True), model
        )
        engine = None
    else:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
        config = {
            "train_micro_batch_size_per_gpu": 2,
            "train_batch_size": 2 * dist.get_world_size(),
            "zero_optimization": {
                "stage": 3,
                "stage3_param_persistence_threshold": 0,  # every weight partitioned, as large ones are
                "stage3_gather_16bit_weights_on_model_save": True,
            },
            "zero_allow_untested_optimizer": True,
        }
        optimizer = torch.optim.SGD(trainable(sharded), lr=0.5)
        engine, *_ = deepspeed.initialize(model=sharded, optimizer=optimizer, config=config)
        placeholders = 0
        for _ in range(STEPS):
            for p in engine.module.parameters():  # released, as a large model's would be between modules
                if p.ds_status.name == "AVAILABLE" and not p.ds_active_sub_modules:
                    p.partition()
                    placeholders += 1
            loss = engine(**inputs).loss
            engine.backward(loss)
            if grads is None:
                grads = [deepspeed.utils.safe_get_full_grad(p).clone() for p in trainable(engine.module)]
            engine.step()
            losses.append(loss.item())
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        stub = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, deepspeed_config=config)
        accelerator = SimpleNamespace(
            state=SimpleNamespace(distributed_type=SimpleNamespace(value="DEEPSPEED")),
            get_state_dict=lambda model: Accelerator.get_state_dict(stub, model),
        )
    state_dict = sharding.adapter_state_dict(accelerator, sharded, engine)
    live = {}  # the trained values themselves, gathered: what the saved adapter must hold
    for name, p in sharded.named_parameters():
        if p.requires_grad:
            key = name.replace(".default", "")  # PEFT's file keys leave out the adapter name
            if engine is not None:
                with deepspeed.zero.GatheredParameters([p]):
                    live[key] = p.detach().clone()
            else:
                live[key] = p.full_tensor().detach().clone()
    if rank == 0:
        save_file(live, out / "live.safetensors")
        sharded.save_pretrained(out / "sharded", save_embedding_layers=False, state_dict=state_dict)
        ref.save_pretrained(out / "reference", save_embedding_layers=False)
        diffs = {n: (g - r).abs().max().item() for n, g, r in zip(names, grads, ref_grads)}
        result = {"reference_losses": ref_losses, "losses": losses, "grad_max_diff": max(diffs.values())}
        result["gradients"] = len(diffs)
        if kind == "zero3":
            result["placeholders"] = placeholders
        (out / "result.json").write_text(json.dumps(result, indent=2))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown: once in a CI run a rank aborted there ("terminate called without an active
    # exception", a C++ thread of the process group still alive at exit) after its work was done.
    os._exit(code)
