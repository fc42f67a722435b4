"""Several processes: turn a launcher's world into one distributed job on CPU (gloo) as on GPUs (nccl), refuse a
launch that would silently become something else, and record what each rank trained on.

Why our own: on a machine without CUDA, transformers 5.24 gives every rank of `torch.distributed.run` (or
`accelerate launch` with a multi-GPU config) a single-process accelerator unless `ACCELERATE_USE_CPU` is set:
two independent trainings writing one folder. Accelerate's FSDP settings on CPU silently train under DDP, and a
DeepSpeed config without deepspeed fails deep inside the launcher. Each of those is refused here, before the
model is loaded, with what to use instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import socket
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

log = logging.getLogger(__name__)

DDP_CONFIG = "configs/accelerate/ddp.yaml"


class LaunchError(RuntimeError):
    pass


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        return default


def problem(env: Mapping[str, str], cuda_devices: int, deepspeed_installed: bool) -> str | None:
    """Why the launch the environment asks for cannot run on this machine (and what to use instead), or None.
    `env` is what `accelerate launch` / `torch.distributed.run` put in each rank's environment."""
    world = _int(env, "WORLD_SIZE", 1)
    if _flag(env, "ACCELERATE_USE_FSDP") and cuda_devices == 0:
        return (
            "FSDP was asked (ACCELERATE_USE_FSDP=true, from an accelerate config such as "
            "configs/accelerate/fsdp2.yaml) but this machine has no CUDA GPU: accelerate would train under plain "
            f"DDP instead, every rank holding the whole model. Use ACCELERATE={DDP_CONFIG} (data parallel, gloo "
            "on CPU), or run the FSDP config on GPUs"
        )
    if _flag(env, "ACCELERATE_USE_DEEPSPEED"):
        if cuda_devices == 0:
            return (
                "DeepSpeed ZeRO was asked (ACCELERATE_USE_DEEPSPEED=true, from configs/accelerate/zero*.yaml) but "
                f"this machine has no CUDA GPU. Use ACCELERATE={DDP_CONFIG} (data parallel, gloo on CPU), or run "
                "the ZeRO config on GPUs"
            )
        if not deepspeed_installed:
            return (
                "DeepSpeed ZeRO was asked (ACCELERATE_USE_DEEPSPEED=true) but the deepspeed package is not "
                "installed: pip install -e '.[deepspeed]' (`make train ACCELERATE=configs/accelerate/zero2.yaml` "
                "installs it), or use ACCELERATE=configs/accelerate/ddp.yaml"
            )
    local = _int(env, "LOCAL_WORLD_SIZE", world)
    if world > 1 and cuda_devices and local > cuda_devices:
        return (
            f"{local} processes on this machine (LOCAL_WORLD_SIZE) but {cuda_devices} CUDA GPU(s): two ranks cannot "
            f"share one GPU. Launch at most {cuda_devices} per machine (NPROC={cuda_devices}), or hide the GPUs "
            "(CUDA_VISIBLE_DEVICES=) to run data parallel on the CPU"
        )
    return None


def _deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


@dataclass(frozen=True)
class World:
    """The distributed job as accelerate built it in this process."""

    world_size: int
    rank: int
    local_rank: int
    distributed_type: str  # accelerate's DistributedType: NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED
    backend: str | None  # gloo, nccl, or None for one process
    device: str


def start(env: MutableMapping[str, str] = os.environ) -> World:
    """Check the launch, make it one distributed job, and return it. Call before loading anything; idempotent."""
    from accelerate import PartialState

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    reason = problem(env, cuda, _deepspeed_installed())
    if reason:
        raise LaunchError(reason)
    world = _int(env, "WORLD_SIZE", 1)
    cpu = world > 1 and cuda == 0
    if cpu and not _flag(env, "ACCELERATE_USE_CPU"):
        # Without it every rank builds a single-process accelerator (see the module docstring).
        env["ACCELERATE_USE_CPU"] = "true"
    if not cuda and env.get("ACCELERATE_MIXED_PRECISION", "no") != "no":
        # An accelerate config's bf16 would autocast on CPU; there the weights are already in model.dtype and
        # the adapters stay fp32, as in a run without a launcher.
        if env.get("RANK", "0") == "0":
            log.info("accelerate mixed_precision=%s ignored on CPU", env["ACCELERATE_MIXED_PRECISION"])
        env["ACCELERATE_MIXED_PRECISION"] = "no"
    state = PartialState(cpu=cpu)
    found = World(
        world_size=state.num_processes,
        rank=state.process_index,
        local_rank=state.local_process_index,
        distributed_type=state.distributed_type.value,
        backend=state.backend,
        device=str(state.device),
    )
    if found.world_size != world:
        raise LaunchError(
            f"the launcher started {world} processes (WORLD_SIZE) but accelerate built a {found.world_size}-process "
            f"job ({found.distributed_type}): they would train independently. Launch with "
            f"`accelerate launch --config_file {DDP_CONFIG}` or `python -m torch.distributed.run`"
        )
    return found


def describe(world: World) -> str:
    return (
        f"world size {world.world_size}, rank {world.rank}, {world.distributed_type}"
        + (f" ({world.backend})" if world.backend else "")
        + f" on {world.device}"
    )


def processes(world: World) -> list[dict]:
    """Every rank's own view (rank, host, device), gathered; for run.json."""
    mine = {**asdict(world), "host": socket.gethostname(), "pid": os.getpid()}
    if world.world_size == 1:
        return [mine]
    from accelerate.utils import gather_object

    return sorted(gather_object([mine]), key=lambda p: p["rank"])


def verify(trainer, world: World) -> None:
    """The trainer's own accelerator and arguments agree with the job (what the framework does, not the launcher's
    word); raised before the first step."""
    state, args = trainer.accelerator.state, trainer.args
    seen = (state.num_processes, state.process_index, state.distributed_type.value, args.world_size)
    wanted = (world.world_size, world.rank, world.distributed_type, world.world_size)
    if seen != wanted:
        raise LaunchError(
            f"the trainer runs as {state.distributed_type.value} with {state.num_processes} process(es), rank "
            f"{state.process_index}, world size {args.world_size}; the launch is {describe(world)}. Refusing to "
            "train independent copies"
        )


def example_id(ids: list[int]) -> str:
    """A short, stable name for one training example: its token ids hashed."""
    return hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:12]


class StepRecord(TrainerCallback):
    """Which examples each rank trained on in each optimizer step, gathered to rank 0 and appended to `out`
    (one JSON line per step): the proof that ranks split the data rather than repeat it. Several processes only;
    one small collective per step."""

    def __init__(self, out: Path, pad_id: int):
        self.out, self.pad_id = out, pad_id
        self.seen: list[str] = []
        self.handle = None

    def _record(self, module, args, kwargs):
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
        for r in range(ids.shape[0]):
            row = ids[r]
            if mask is not None:
                self.seen.append(example_id(row[mask[r].bool()].tolist()))
            elif positions is not None:  # padding-free: one row, a sequence starts at each position 0
                starts = (positions[r] == 0).nonzero().flatten().tolist() + [row.shape[0]]
                self.seen += [example_id(row[a:b].tolist()) for a, b in zip(starts, starts[1:])]
            else:
                self.seen.append(example_id(row[row != self.pad_id].tolist()))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self.seen = []

    def on_step_end(self, args, state, control, **kwargs):
        from accelerate.utils import gather_object

        mine = {"rank": args.process_index, "examples": self.seen}
        ranks = sorted(gather_object([mine]), key=lambda r: r["rank"])
        if state.is_world_process_zero:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with self.out.open("a") as f:
                f.write(json.dumps({"step": state.global_step, "ranks": ranks}) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.remove()


def _several() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _several():
        torch.distributed.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is true on any (one small all-reduce; `flag` itself in one process)."""
    if not _several():
        return flag
    from accelerate import PartialState

    t = torch.tensor([int(flag)], device=PartialState().device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def main(argv: list[str] | None = None) -> int:
    """`python -m instructify.training.distributed ACCELERATE_CONFIG [NPROC]`: the Makefile's check before `accelerate launch`,
    with the same rules as inside each rank (the launcher itself fails with a traceback on some of them)."""
    import yaml

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m instructify.training.distributed ACCELERATE_CONFIG [NPROC]", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        accelerate_cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        print(f"error: {path}: cannot read the accelerate config: {e}", file=sys.stderr)
        return 2
    kind = str(accelerate_cfg.get("distributed_type", "NO"))
    nproc = int(argv[1]) if len(argv) > 1 and argv[1] else int(accelerate_cfg.get("num_processes", 1))
    if kind == "NO" and nproc > 1:
        print(
            f"error: {path}: distributed_type NO runs one process; NPROC={nproc} would be ignored. "
            f"Use ACCELERATE={DDP_CONFIG} for several processes",
            file=sys.stderr,
        )
        return 2
    machines = max(1, int(accelerate_cfg.get("num_machines", 1)))
    env = {  # what the launcher will put in each rank's environment; num_processes counts every machine's
        "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(max(1, nproc // machines)),
        "ACCELERATE_USE_FSDP": str(kind == "FSDP").lower(),
        "ACCELERATE_USE_DEEPSPEED": str(kind == "DEEPSPEED").lower(),
    }
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    reason = problem(env, cuda, _deepspeed_installed())
    if reason:
        print(f"error: {path}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
