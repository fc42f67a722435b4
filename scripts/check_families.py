"""`make check-families`: does llama.cpp run each family's GGUF as transformers runs the model folder?

For every tiny family base of tests/families.py: the same short `sft` + `export` the tests run, `export --gguf
f16`, then llama.cpp (llama-cpp-python, built by the Makefile) on the GGUF: its tokenisation of the rendered
prompt equals transformers' ids, and its greedy tokens on a few prompts equal transformers' `generate()` on the
folder. Results, per family, in bench/families-llamacpp.json (and the CPU they ran on).

    .venv/bin/python scripts/check_families.py [--families llama3,qwen2] [--out bench/families-llamacpp.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import families  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from conftest import conversations  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from instructify import cli  # noqa: E402
from instructify.chat import template  # noqa: E402
from instructify.ship import gguf_export  # noqa: E402
from scripts.machine import cpu_flags  # noqa: E402

PROMPTS = [
    [{"role": "user", "content": "hi there how are you doing today"}],
    [{"role": "user", "content": "what did you do this weekend"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "do you have any plans for tonight"},
        {"role": "assistant", "content": "not really"},
        {"role": "user", "content": "that sounds like fun 123"},
    ],
]
NEW_TOKENS = 12


def trained(name: str, root: Path) -> Path:
    """The family's base after the tests' short run, exported: root/<name>/model."""
    chats = root / "chats.jsonl"
    if not chats.is_file():
        chats.write_text("".join(json.dumps(r) + "\n" for r in conversations()))
    config = {
        "output_dir": str(root / name),
        "model": {"name": str(families.build(name, root / f"base-{name}")), "dtype": "float32"},
        "data": {"sources": [{"path": str(chats)}], "eval_share": 0.2, "max_length": 64},
        "lora": {"r": 8, "alpha": 16},
        "training": dict(max_steps=60, per_device_batch_size=4, learning_rate=1e-2, logging_steps=20),
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    for command in (["sft"], ["export"]):
        if cli.main([*command, "--config", str(path)]) != 0:
            raise RuntimeError(f"{name}: {command[0]} failed")
    return root / name / "model"


def compare(folder: Path, gguf: Path) -> dict:
    from llama_cpp import Llama

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    llm = Llama(model_path=str(gguf), n_ctx=512, n_threads=2, seed=0, verbose=False, logits_all=False)
    im_end = tok.convert_tokens_to_ids(template.IM_END)
    same_ids = same_tokens = 0
    samples = []
    for messages in PROMPTS:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        ids = list(ids["input_ids"])
        theirs = llm.tokenize(text.encode(), add_bos=False, special=True)
        same_ids += theirs == ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
        ours = out[0, len(ids) :].tolist()
        ours = ours[: ours.index(im_end) + 1] if im_end in ours else ours
        llm.reset()
        generated = []
        for t in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            generated.append(t)
            if t == im_end or len(generated) == NEW_TOKENS or llm.token_eos() == t:
                break
        same_tokens += generated == ours
        samples.append({"transformers": ours, "llama.cpp": generated, "ids_equal": theirs == ids})
    del llm
    return {
        "prompts": len(PROMPTS),
        "same_prompt_ids": same_ids,
        "same_greedy_tokens": same_tokens,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(families.FAMILIES))
    parser.add_argument("--out", default=str(ROOT / "bench" / "families-llamacpp.json"))
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for name in args.families.split(","):
            t0 = time.time()
            try:
                folder = trained(name, Path(d))
                gguf = gguf_export.write_gguf(folder, "f16")
            except (gguf_export.GGUFError, RuntimeError) as e:
                results[name] = {"status": "no gguf", "why": str(e).splitlines()[0]}
                print(f"{name:8} no GGUF: {results[name]['why']}", flush=True)
                continue
            found = compare(folder, gguf)
            ok = found["same_prompt_ids"] == found["same_greedy_tokens"] == found["prompts"]
            results[name] = {
                "status": "pass" if ok else "differs",
                **found,
                "seconds": round(time.time() - t0, 1),
            }
            print(
                f"{name:8} {results[name]['status']:8} prompt ids {found['same_prompt_ids']}/{found['prompts']}, "
                f"greedy tokens {found['same_greedy_tokens']}/{found['prompts']}",
                flush=True,
            )
    import llama_cpp

    record = {
        "cpu": cpu_flags(),
        "llama_cpp_python": llama_cpp.__version__,
        "new_tokens": NEW_TOKENS,
        "families": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["status"] in ("pass", "no gguf") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
