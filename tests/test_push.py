"""push: the folder that would be uploaded (dry run), its model card, and the upload call; no network."""

import shutil

import pytest
import yaml
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from instructify import cli
from instructify.evals.conformance import Reply, summarize, write_report
from instructify.ship import doctor

SECRET = "hf_SECRETsecretSECRETsecret0123456789"


@pytest.fixture
def run(tmp_path, chat_model, chat_file):
    """A finished run folder: the exported model and an eval report."""
    out = tmp_path / "run"
    shutil.copytree(chat_model, out / "model")
    prompts = [{"id": "p0", "messages": [{"role": "user", "content": "hi"}], "prior_turns": 1}]
    for name, stopped in (("base", False), ("trained", True)):
        replies = [Reply("p0", 1, "hello", 1, stopped, not stopped)]
        write_report(out, name, summarize(replies), replies, prompts)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(out),
                "model": {"name": "google/gemma-3-270m"},
                "data": {"sources": [{"path": str(chat_file)}, {"path": "HuggingFaceTB/smoltalk"}]},
                "push": {"license": "gemma"},
            }
        )
    )
    return out, cfg


def _card_meta(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_dry_run_writes_the_folder_with_its_card(run, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    out, cfg = run
    assert cli.main(["push", "--config", str(cfg), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    folder = out / "push"
    names = sorted(p.name for p in folder.iterdir())
    assert {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    } <= set(names) and "training_config.yaml" in names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    assert {c.status for c in doctor.diagnose(folder)} == {"PASS"}
    card = (folder / "README.md").read_text()
    meta = _card_meta(card)
    assert meta["base_model"] == "google/gemma-3-270m" and meta["base_model_relation"] == "finetune"
    assert meta["datasets"] == ["HuggingFaceTB/smoltalk"] and meta["library_name"] == "transformers"
    assert (
        meta["pipeline_tag"] == "text-generation" and meta["license"] == "gemma" and "chatml" in meta["tags"]
    )
    assert "from transformers import AutoModelForCausalLM, AutoTokenizer" in card
    assert "| base | 1 | 0.0%" in card and "| trained | 1 | 100.0%" in card and "apply_chat_template" in card
    assert "lora:" in card and "dry run: nothing uploaded" in printed and "private your-name/run" in printed
    assert SECRET not in printed and not any(SECRET.encode() in p.read_bytes() for p in folder.iterdir())


def test_upload_gets_the_folder_repo_and_privacy(run, monkeypatch, capsys):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "create_repo",
        lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)),
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "upload_folder",
        lambda self, **kw: calls.append(("upload", kw, self.token)) or "https://hf.co/me/chat/commit/1",
    )
    monkeypatch.setenv("HF_TOKEN", SECRET)
    out, cfg = run
    assert cli.main(["push", "--config", str(cfg), "--repo-id", "me/chat"]) == 0
    (create, repo_id, kw), (upload, up, token) = calls
    assert repo_id == "me/chat" and kw["private"] is True
    assert up["folder_path"] == str(out / "push") and up["repo_id"] == "me/chat" and token == SECRET
    assert SECRET not in capsys.readouterr().out


def test_adapter_push_names_the_hub_base(run, gemma_like):
    out, cfg = run
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(gemma_like), LoraConfig(r=2, target_modules="all-linear")
    )
    model.save_pretrained(out / "adapter")
    assert cli.main(["push", "--config", str(cfg), "--dry-run", "push.what=adapter"]) == 0
    import json

    adapter_config = json.loads((out / "push" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "google/gemma-3-270m"
    meta = _card_meta((out / "push" / "README.md").read_text())
    assert meta["library_name"] == "peft" and meta["base_model_relation"] == "adapter"


def test_nothing_to_push_is_a_message(tmp_path, capsys):
    assert cli.main(["push", "--dry-run", f"output_dir={tmp_path}"]) == 1
    assert "nothing to push; run `make train` first" in capsys.readouterr().err
