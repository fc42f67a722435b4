"""Bases instructify cannot train are refused from their config.json alone: one line naming the model type, what
is missing and what to use instead; no traceback, no weights loaded, no run folder written."""

import json
import re

import pytest
import transformers

from instructify import cli
from instructify.config import ModelConfig
from instructify.training import support


def config_only(folder, config_class: str, **extra) -> str:
    """A model folder holding only config.json, as a Hub repository's first file: nothing else is read."""
    config = getattr(transformers, config_class)().to_dict()
    config.update(extra)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


CASES = [  # (config class, extra config.json entries, what the message must say)
    ("Qwen3NextConfig", {}, r"model_type 'qwen3_next' has layers of kind linear_attention"),
    ("Lfm2Config", {}, r"model_type 'lfm2' has .*pick an attention-only base"),
    ("GraniteMoeHybridConfig", {}, r"model_type 'granitemoehybrid' has layers of kind"),
    ("MambaConfig", {}, r"model_type 'mamba' has a recurrent or hybrid state cache"),
    ("Gemma3Config", {}, r"'gemma3' \(.*\) is a vision-language .* use google/gemma-3-270m or google/gemma-3-1b-pt"),
    ("SiglipVisionConfig", {}, r"'siglip_vision_model' .* is a vision-language or non-generative model"),
    ("LlamaConfig", {"model_type": "acme_lm", "auto_map": {"AutoConfig": "acme.AcmeConfig"}},
     r"'acme_lm' is code from the model's repository .* set model.trust_remote_code: true"),
    ("LlamaConfig", {"model_type": "acme_lm"}, r"'acme_lm' is unknown to this transformers"),
]  # fmt: skip


@pytest.mark.parametrize("config_class, extra, message", CASES, ids=[c[0] + str(len(c[1])) for c in CASES])
def test_an_unsupported_base_is_refused_before_loading(
    tiny_config, tmp_path, capsys, config_class, extra, message
):
    folder = config_only(tmp_path / "base", config_class, **extra)
    path = tiny_config("refused")
    for command in ("train", "synth"):
        capsys.readouterr()
        assert cli.main([command, "--config", str(path), f"model.name={folder}"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: model.name={folder}: ") and len(err.strip().splitlines()) == 1, err
        assert re.search(message, err), err
        assert "Traceback" not in err and not (tmp_path / "refused").exists()


def test_trained_kinds_pass_and_remote_code_passes_when_allowed(gemma_like, llama3_like):
    for folder in (gemma_like, llama3_like):  # Gemma 3's layer_types are attention only
        support.check(ModelConfig(name=str(folder)), str(folder))
    custom = {"model_type": "acme_lm", "auto_map": {"AutoConfig": "acme.AcmeConfig"}}
    assert support.problem(custom, trust_remote_code=True) is None
    assert support.problem(custom, trust_remote_code=False) is not None


WORKED = {"llama-3.2-1b": "llama3", "qwen2.5-0.5b": "qwen2", "mistral-7b-v0.3": "mistral"}


@pytest.mark.parametrize("worked, family", WORKED.items())
def test_worked_configs_train_a_tiny_base_of_their_kind(worked, family, tmp_path, chat_file):
    """Each worked Hub config, as written, with only the model swapped for a tiny base of the same kind, the data
    for the test conversations and the run cut short: its settings load, train, and export past doctor."""
    import families

    base = families.build(family, tmp_path / "base")
    path = f"configs/{worked}.yaml"
    overrides = [
        f"model.name={base}",
        "model.dtype=float32",
        f"output_dir={tmp_path / 'run'}",
        f"data.sources=[{{path: {chat_file}}}]",
        "data.eval_share=0.2",
        "training.max_steps=6",
        "training.learning_rate=1e-2",  # six steps must move the new rows off their start, or doctor refuses
        "training.per_device_batch_size=2",
        "training.gradient_accumulation_steps=1",
    ]
    assert cli.main(["sft", "--config", path, *overrides]) == 0
    assert cli.main(["export", "--config", path, *overrides]) == 0
    assert (tmp_path / "run" / "model" / "config.json").is_file()
