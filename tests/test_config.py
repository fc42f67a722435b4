from pathlib import Path

import pytest

from instructify import config

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))


def test_configs_exist():
    assert {p.name for p in CONFIGS} >= {"quickstart.yaml", "smollm2-135m.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path, tmp_path):
    cfg = config.load(path)
    assert cfg.training.max_steps > 0 and cfg.data.max_length > 0
    # the resolved config round-trips through the file a run writes
    assert config.load(config.save(cfg, tmp_path / "config.yaml")) == cfg


def test_precedence_defaults_file_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  max_steps: 7\n  learning_rate: 1.0e-3\n")
    cfg = config.load(
        path, ["training.max_steps=50", "lora.r=8", "data.train_size=null", "training.warmup_ratio=1e-2"]
    )
    assert cfg.training.warmup_ratio == 0.01  # YAML reads 1e-2 as a string; a float field takes it
    assert cfg.training.max_steps == 50  # command line beats file
    assert cfg.training.learning_rate == 1e-3  # file beats default
    assert cfg.lora.r == 8 and cfg.data.train_size is None
    assert cfg.lora.alpha == config.LoraConfig().alpha  # default


def test_unknown_key_names_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  max_step: 7\n")
    with pytest.raises(
        config.ConfigError,
        match=r"c.yaml: unknown key `training.max_step`; did you mean `training.max_steps`",
    ):
        config.load(path)
    with pytest.raises(config.ConfigError, match="did you mean `lora.alpha`"):
        config.load(None, ["lora.alpah=4"])


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(config.ConfigError, match="`training.max_steps` must be int"):
        config.load(None, ["training.max_steps=many"])
    with pytest.raises(
        config.ConfigError,
        match="`template.name` is 'llama'; expected chatml, model, or an existing .jinja file",
    ):
        config.load(None, ["template.name=llama"])
    with pytest.raises(config.ConfigError, match="expected key=value"):
        config.load(None, ["training.max_steps"])


def test_reference_lists_every_leaf_with_help():
    rows = config.describe()
    keys = {k for k, _, _ in rows}
    assert {"model.name", "training.max_steps", "eval.max_new_tokens", "output_dir"} <= keys
    assert all(help for _, _, help in rows)


def test_a_value_outside_its_choices_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(
        config.ConfigError, match="`model.dtype` is 'fp16'; expected one of auto, bfloat16, float32"
    ):
        config.load(None, ["model.dtype=fp16"])
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  sources:\n    - path: x.jsonl\n      format: chatml\n")
    with pytest.raises(
        config.ConfigError, match=r"c.yaml: `data.sources\[0\].format` is 'chatml'; expected one of"
    ):
        config.load(path)
    assert config.load(None, ["model.attn_implementation=flash_attention_2"]).model.attn_implementation


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        (["training.lr_scheduler=cosine_with_min_lr"], "min_lr_rate should be set"),
        (["training.lr_scheduler_kwargs={min_lr: 0.1}"], "unexpected keyword argument 'min_lr'"),
        (["training.lr_scheduler=cosin"], "not a valid SchedulerType"),
    ],
)
def test_a_schedule_transformers_cannot_build_is_an_error_at_load(overrides, why):
    with pytest.raises(config.ConfigError, match=f"`training.lr_scheduler`.*{why}"):
        config.load(None, overrides)
    ok = ["training.lr_scheduler=cosine_with_min_lr", "training.lr_scheduler_kwargs={min_lr_rate: 0.15}"]
    assert config.load(None, ok).training.lr_scheduler_kwargs == {"min_lr_rate": 0.15}


def test_a_source_max_length_above_data_max_length_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  max_length: 128\n  sources:\n    - path: x.jsonl\n      max_length: 256\n")
    with pytest.raises(
        config.ConfigError, match=r"c.yaml: `data.sources\[0\].max_length` must be between 1 and"
    ):
        config.load(path)
    path.write_text("data:\n  max_length: 128\n  sources:\n    - path: x.jsonl\n      max_length: 64\n")
    assert config.load(path).data.sources[0].max_length == 64


def test_the_help_of_a_choice_lists_every_allowed_value():
    """Values live in the Literal annotation; the help (and so `config --keys` and docs/config-reference.md) is
    generated from it and cannot leave one out."""
    helps = {key: help for key, _, help in config.describe()}
    choices = {
        "model.attn_implementation": ("auto", "sdpa", "eager", "flash_attention_2"),
        "data.sources[].format": (
            "auto",
            "messages",
            "sharegpt",
            "alpaca",
            "prompt_completion",
            "two_speaker",
        ),
        "push.what": ("model", "adapter"),
    }
    for key, values in choices.items():
        assert all(v in helps[key] for v in values), key
    assert "auto (CUDA: flash-attn when installed" in helps["model.attn_implementation"]


def test_data_formats_are_the_config_choices():
    from typing import get_args, get_type_hints

    from instructify.data import formats

    assert set(get_args(get_type_hints(config.SourceConfig)["format"])) == {"auto", *formats.CONVERTERS}


def test_every_dtype_choice_is_one_the_loader_takes_and_nothing_else():
    from typing import get_args, get_type_hints

    import torch

    from instructify.training.model import pick_dtype

    for value in get_args(get_type_hints(config.ModelConfig)["dtype"]):
        assert pick_dtype(value, torch.device("cpu")) in (torch.bfloat16, torch.float32)
    with pytest.raises(KeyError):
        pick_dtype("bf16", torch.device("cpu"))


@pytest.mark.parametrize(
    "env",
    [{"ATEN_CPU_CAPABILITY": "avx2"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}],
)
def test_kernels_held_to_avx2_choose_float32(env):
    """An AVX-512-BF16 machine run as an AVX2 one (bf16 matmuls emulated): `auto` picks fp32, as on AVX2."""
    import os
    import subprocess
    import sys

    code = "import torch; from instructify.training.model import pick_dtype; print(pick_dtype('auto', torch.device('cpu')))"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert out.stdout.strip() == "torch.float32", out.stderr
