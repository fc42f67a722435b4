"""`instructify push`: the merged model (or the adapter) with a model card, to the Hugging Face Hub.

The folder that would be uploaded is built first in `<output_dir>/push` (safetensors, tokenizer, configs, card,
training config): `--dry-run` stops there and shows it. The token comes only from `HF_TOKEN` or the
huggingface_hub login, is passed to the client and never printed or written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import yaml

from instructify.config import Config, to_dict
from instructify.evals import report
from instructify.evals.conformance import read_report
from instructify.ship.export import check

log = logging.getLogger(__name__)

# What travels: weights as safetensors only, the configs and the tokenizer; nothing pickled.
SHIPPED = re.compile(r".*\.(safetensors|json|jinja|model|txt)$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PushError(RuntimeError):
    pass


def _hub_ids(names: list[str]) -> list[str]:
    return [n for n in names if HUB_ID.match(n) and not Path(n).exists()]


def card(cfg: Config, repo_id: str, entries: dict) -> str:
    """README.md: Hub metadata, what the model is, the conformance table, usage, the training config."""
    p = cfg.push
    base = p.base_model or next(iter(_hub_ids([cfg.model.name])), "")
    datasets = p.datasets or _hub_ids([s.path for s in cfg.data.sources])
    meta = {
        **({"base_model": base} if base else {}),
        "base_model_relation": "adapter" if p.what == "adapter" else "finetune",
        **({"datasets": datasets} if datasets else {}),
        "library_name": "peft" if p.what == "adapter" else "transformers",
        "pipeline_tag": "text-generation",
        "license": p.license,
        "tags": ["instructify", "chatml", "sft", "lora", "conversational"],
    }
    sources = ", ".join(s.path for s in cfg.data.sources)
    load = (
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")'
        if p.what == "model"
        else f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")  # needs peft'
    )
    imports = (
        "AutoModelForCausalLM, AutoTokenizer"
        if p.what == "model"
        else "AutoTokenizer\nfrom peft import AutoPeftModelForCausalLM"
    )
    table = report.table(entries) if entries else "(no evaluation report in the run folder)"
    training = yaml.safe_dump({k: v for k, v in to_dict(cfg).items() if k != "push"}, sort_keys=False)
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {repo_id.split("/")[-1]}

A ChatML chat model made with instructify from the base model `{base or cfg.model.name}`:
LoRA fine-tuning on the assistant replies and the `<|im_end|>` that closes each one ({sources}).
{"The LoRA adapter and the trained ChatML token rows." if p.what == "adapter" else "The adapter is merged into the weights."}
`<|im_end|>` is the eos token in the tokenizer, `config.json` and `generation_config.json`, so a default
`generate()` stops at the end of the reply.

## Template conformance

Held-out conversations, greedy decoding, each model with its own generation_config (stop: the reply ended on
`<|im_end|>`; clean_stop: stopped, non-empty and no leaked template structure).

{table}

## Usage

```python
from transformers import {imports}

tok = AutoTokenizer.from_pretrained("{repo_id}")
{load}
inputs = tok.apply_chat_template([{{"role": "user", "content": "hey, how was your weekend?"}}],
                                 add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**inputs, max_new_tokens=128)
print(tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

## Training config

```yaml
{training.strip()}
```
"""


def build(cfg: Config, repo_id: str) -> Path:
    """The exact folder that would be uploaded: `<output_dir>/push`."""
    out = Path(cfg.output_dir)
    source = out / cfg.push.what
    if not (source / ("adapter_config.json" if cfg.push.what == "adapter" else "config.json")).is_file():
        raise PushError(f"{source}: nothing to push; run `make train` first (push.what={cfg.push.what})")
    if cfg.push.what == "model":
        check(source)  # a folder that would ramble on is not pushed
    folder = out / "push"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and SHIPPED.match(path.name):
            shutil.copyfile(path, folder / path.name)
    if cfg.push.what == "adapter":  # the local path of the base would mean nothing on the Hub
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = cfg.push.base_model or cfg.model.name
        (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    entries = {k: v for k, v in read_report(out).items() if "stop_rate" in v}
    (folder / "README.md").write_text(card(cfg, repo_id, entries))
    (folder / "training_config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return folder


def upload(folder: Path, repo_id: str, private: bool) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get("HF_TOKEN") or None)  # else the huggingface_hub login, if any
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="Upload from instructify"
    )
    return str(getattr(commit, "commit_url", commit))
