"""prepare caches; inspect --jsonl shows exactly what the trainer's collator feeds the model."""

import json

import pytest
import yaml
from peft import get_peft_model
from trl import SFTTrainer

from instructify import cli, config
from instructify.data import prepare
from instructify.training import sft
from instructify.training.model import lora_config


@pytest.fixture
def cfg_path(tmp_path, gemma_like, chat_file, monkeypatch):
    monkeypatch.setenv("INSTRUCTIFY_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "model": {"name": str(gemma_like), "dtype": "float32"},
                "data": {
                    "sources": [{"path": str(chat_file)}],
                    "eval_share": 0.2,
                    "max_length": 40,
                    "overlength": "truncate",
                },
                "training": {"max_steps": 1, "per_device_batch_size": 4},
            }
        )
    )
    return path


def test_prepare_caches_and_reports_lengths(cfg_path, capsys):
    assert cli.main(["prepare", "--config", str(cfg_path)]) == 0
    first = capsys.readouterr().out
    assert "prepared in" in first and "padding_share_random" in first and "p90" in first
    assert cli.main(["prepare", "--config", str(cfg_path)]) == 0
    assert "cached in" in capsys.readouterr().out
    # a different max_length is a different cache entry
    assert cli.main(["prepare", "--config", str(cfg_path), "data.max_length=64"]) == 0
    assert "prepared in" in capsys.readouterr().out


def test_length_stats():
    # nearest-rank percentiles of five lengths: the 3rd (p50) and the 5th (p90: 0.9 x 5 rounds up to 5)
    stats = prepare.length_stats([40, 10, 50, 30, 20], batch_size=5)
    assert (stats["p50"], stats["p90"], stats["max"], stats["tokens"]) == (30, 50, 50, 150)
    # one batch of 5 padded to 50: 250 slots for 150 tokens, whatever the order
    assert stats["padding_share_random"] == stats["padding_share_grouped"] == pytest.approx(1 - 150 / 250)
    # batches of 2: sorted [10, 20] [30, 40] [50] pad 10 + 10 + 0 of 170 slots
    assert prepare.length_stats([40, 10, 50, 30, 20], batch_size=2)["padding_share_grouped"] == pytest.approx(
        20 / 170
    )


def test_inspect_jsonl_equals_what_the_collator_trains_on(cfg_path, tmp_path):
    out = tmp_path / "inspect.jsonl"
    assert cli.main(["inspect", "--config", str(cfg_path), "--limit", "100", "--jsonl", str(out)]) == 0
    shown = [json.loads(line) for line in out.read_text().splitlines()]
    assert shown and set(shown[0]) == {"messages", "input_ids", "tokens", "labels"}

    cfg = config.load(cfg_path)
    setup = sft.setup(cfg)
    peft_model = get_peft_model(setup.model, lora_config(cfg.lora, setup.tokens.new_token_ids, setup.model))
    trainer = SFTTrainer(
        model=peft_model,
        args=sft.sft_args(cfg, False),
        train_dataset=setup.data.train.select_columns(["input_ids", "assistant_masks"]),
        processing_class=setup.tokenizer,
    )
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert len(rows) == len(shown)
    for i in range(0, len(rows), 4):
        batch = trainer.data_collator(rows[i : i + 4])
        for j, ex in enumerate(shown[i : i + 4]):
            n = len(ex["input_ids"])
            assert batch["input_ids"][j, :n].tolist() == ex["input_ids"]
            assert batch["labels"][j, :n].tolist() == ex["labels"]
            assert (batch["labels"][j, n:] == -100).all() and batch["attention_mask"][j, n:].sum() == 0
    tok = setup.tokenizer
    for ex in shown:
        assert tok.convert_ids_to_tokens(ex["input_ids"]) == ex["tokens"]
        trained = [t for t, label in zip(ex["input_ids"], ex["labels"]) if label != -100]
        assert trained[-1] == setup.tokens.im_end_id


def test_inspect_a_file_in_any_format(cfg_path, tmp_path, capsys):
    alpaca = tmp_path / "a.jsonl"
    alpaca.write_text(json.dumps({"instruction": "say hi", "output": "hi"}) + "\n")
    assert cli.main(["inspect", "--config", str(cfg_path), "--data", str(alpaca)]) == 0
    out = capsys.readouterr().out
    assert "example 0: 25 tokens, 2 trained" in out and "say hi" in out.replace("|", "")
