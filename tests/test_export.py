"""What `sft` + `export` hand a user, checked with plain transformers: a tiny base that never stops comes out
stopping under a default `generate()`; the merged weights equal the adapter's (added and reused tokens, fp32 and
bf16); the saved tokenizer's own template masks exactly what training trained."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import conversations
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify import cli, config
from instructify.chat import template
from instructify.training import sft

pytestmark = pytest.mark.slow


def _config(root: Path, base: Path, name: str, dtype: str, steps: int, lr: float) -> Path:
    data = root / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in conversations(24)))
    config = {
        "output_dir": str(root / name),
        "model": {"name": str(base), "dtype": dtype},
        "data": {"sources": [{"path": str(data)}], "eval_share": 0.25, "max_length": 256},
        "lora": {"r": 8, "alpha": 16},
        "training": {
            "max_steps": steps,
            "per_device_batch_size": 8,
            "learning_rate": lr,
            "warmup_ratio": 0.0,
            "logging_steps": 10,
            "save_steps": 0,
            "seed": 0,
        },
        "eval": {"monitor_every": 0, "monitor_generate_every": 0},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _sft_and_export(path: Path) -> Path:
    assert cli.main(["sft", "--config", str(path)]) == 0
    assert cli.main(["export", "--config", str(path)]) == 0
    return Path(yaml.safe_load(path.read_text())["output_dir"])


def _stops(model, tok, prompts: list[dict], budget: int) -> list[bool]:
    """Plain `generate()` with the folder's own generation_config (no eos, pad or sampling argument): does each
    reply end on <|im_end|> within `budget` new tokens?"""
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    stopped = []
    for p in prompts:
        ids = tok.apply_chat_template(
            p["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        out = model.generate(**ids, max_new_tokens=budget)[0, ids["input_ids"].shape[1] :]
        stopped.append(out[-1].item() == im_end and len(out) < budget)
    return stopped


def test_sft_and_export_teach_a_base_that_never_stops_to_stop(tmp_path, gemma_like):
    run = _sft_and_export(_config(tmp_path, gemma_like, "stop", "float32", steps=60, lr=1e-2))
    prompts = json.loads((run / "eval_prompts.json").read_text())
    assert len(prompts) >= 4
    before = AutoModelForCausalLM.from_pretrained(gemma_like)
    before_tok = AutoTokenizer.from_pretrained(gemma_like)
    template.add_chat_tokens(before, before_tok)  # the base with ChatML, as training starts from it
    assert sum(_stops(before, before_tok, prompts, 32)) == 0
    model, tok = (
        AutoModelForCausalLM.from_pretrained(run / "model"),
        AutoTokenizer.from_pretrained(run / "model"),
    )
    stopped = _stops(model, tok, prompts, 32)
    assert sum(stopped) >= 0.8 * len(stopped), stopped
    # pad is set for batched generation and is never a stop id
    gen = model.generation_config
    assert gen.pad_token_id == tok.pad_token_id is not None and gen.pad_token_id not in gen.eos_token_id


@pytest.mark.parametrize(
    "base, dtype, tolerance",
    [
        # fp32: merging is exact up to float32 rounding of W + BA
        ("smol_like", "float32", 1e-4),
        ("gemma_like", "float32", 1e-4),
        # bf16, as the quickstart exports: W + BA rounded to bf16 once against the adapter's base and LoRA paths
        # rounded separately. The logits here reach ~3.4, where one bf16 step is 2^-6 = 0.016 (measured: at most
        # one step apart); two steps allowed
        ("gemma_like", "bfloat16", 3e-2),
    ],
)
def test_merged_export_equals_the_adapter(tmp_path, base, dtype, tolerance, request):
    base_path = request.getfixturevalue(base)
    run = _sft_and_export(_config(tmp_path, base_path, "merge", dtype, steps=8, lr=2e-2))
    torch_dtype = getattr(torch, dtype)
    merged = AutoModelForCausalLM.from_pretrained(run / "model", dtype=torch_dtype)
    tok = AutoTokenizer.from_pretrained(run / "model")
    fresh = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype)
    fresh_tok = AutoTokenizer.from_pretrained(base_path)
    tokens = template.add_chat_tokens(fresh, fresh_tok)
    assert len(tokens.new_token_ids) == 2  # added (Gemma) or already there (SmolLM2): both rows train
    adapted = PeftModel.from_pretrained(fresh, run / "adapter").eval()
    for conv in conversations(3):
        ids = tok.apply_chat_template(conv["messages"], return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            a, b = merged(ids).logits.float(), adapted(ids).logits.float()
            plain = adapted.get_base_model()
            with adapted.disable_adapter():
                c = plain(ids).logits.float()
        torch.testing.assert_close(a, b, atol=tolerance, rtol=tolerance)
        assert (
            a - c
        ).abs().max() > 10 * tolerance  # the adapter changed the model: the comparison means something


CONVERSATIONS = {
    "multi-turn": conversations(3)[2]["messages"],
    "system prompt": [
        {"role": "system", "content": "You answer in one line."},
        {"role": "user", "content": "hi there how are you doing today"},
        {"role": "assistant", "content": "im doing good thanks and you"},
    ],
    "unicode": [
        {"role": "user", "content": "Grüße aus Köln 👋 — ça va? 日本語も"},
        {"role": "assistant", "content": "Très bien 😊\nnaïve café, ½ × π ≈ 1.57"},
        {"role": "user", "content": "🙂"},
        {"role": "assistant", "content": "ok"},
    ],
}


@pytest.mark.parametrize("base", ["gemma_like", "smol_like"])
def test_the_saved_template_masks_what_training_trained(tmp_path, base, request):
    path = _config(tmp_path, request.getfixturevalue(base), "mask", "float32", steps=8, lr=2e-2)
    run = _sft_and_export(path)
    training = sft.setup(config.load(path))  # the tokenizer and ChatML tokens training encoded with
    tok = AutoTokenizer.from_pretrained(run / "model")  # as a user loads it: nothing of ours involved
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for name, messages in CONVERSATIONS.items():
        out = tok.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        (enc,) = template.encode(training.tokenizer, [messages], training.tokens)
        assert list(out["input_ids"]) == enc.input_ids, name
        assert list(out["assistant_masks"]) == enc.assistant_masks, name
        # and what that mask trains: each reply's text and the <|im_end|> closing it, nothing else
        trained = [i for i, m in zip(enc.input_ids, enc.assistant_masks) if m]
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert tok.decode(trained) == "<|im_end|>".join(replies) + "<|im_end|>", name
        assert trained.count(im_end) == len(replies)


@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (0.8, 0.95)])
def test_export_writes_the_sampling_default(tmp_path, gemma_like, temperature, top_p):
    path = _config(tmp_path, gemma_like, "sampling", "float32", steps=8, lr=2e-2)
    overrides = [f"template.temperature={temperature}", f"template.top_p={top_p}"]
    assert cli.main(["sft", "--config", str(path), *overrides]) == 0
    assert cli.main(["export", "--config", str(path), *overrides]) == 0
    written = json.loads((tmp_path / "sampling" / "model" / "generation_config.json").read_text())
    assert written.get("do_sample", False) == (temperature > 0)
    assert written.get("temperature") == (temperature or None) and written.get("top_p") == (
        top_p if temperature else None
    )
    # what plain transformers then does by default
    gen = AutoModelForCausalLM.from_pretrained(tmp_path / "sampling" / "model").generation_config
    assert gen.do_sample == (temperature > 0)


def test_sampling_defaults_out_of_range_are_a_config_error(capsys):
    assert cli.main(["config", "--config", "configs/quickstart.yaml", "template.temperature=-1"]) == 2
    assert "`template.temperature` must be >= 0" in capsys.readouterr().err
