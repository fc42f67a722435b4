from pathlib import Path

import pytest

from train import config

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
