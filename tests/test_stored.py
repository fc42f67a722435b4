"""Stored results (instructify/evals/stored.py): the reference's result measured once is reused by the next run
with the same key, with where it was measured; another setting measures it again; a trained model is never stored."""

from __future__ import annotations

import json

import yaml
from conftest import conversations

from instructify import cli
from instructify.evals import stored


def _prompts() -> list[dict]:
    return [
        {**c, "messages": c["messages"][:-1], "reference": c["messages"][-1]["content"], "prior_turns": 1}
        for c in conversations(8)
    ]


def _eval(tmp_path, run: str, model, reference, store, max_new_tokens: int = 8) -> dict:
    out = tmp_path / run
    out.mkdir()
    (out / "eval_prompts.json").write_text(json.dumps(_prompts()))
    path = tmp_path / f"{run}.yaml"
    path.write_text(yaml.safe_dump({
        "output_dir": str(out),
        "model": {"name": str(model), "dtype": "float32"},
        "eval": {"num_conversations": 8, "max_new_tokens": max_new_tokens, "batch_size": 8, "instructions": 1,
                 "instructions_max_new_tokens": 8, "reference": str(reference), "stored": str(store)},
    }))  # fmt: skip
    assert cli.main(["eval", "--config", str(path), "--model", str(model)]) == 0
    return {
        "report": json.loads((out / "report.json").read_text()),
        "instructions": json.loads((out / "instructions.json").read_text()),
    }


def test_a_stored_reference_result_is_reused_until_a_setting_changes(
    tmp_path, chat_model, smol_instruct, monkeypatch
):
    # the tiny local folder stands for a pinned source (a pypi: package, a Hub revision); local folders are not stored
    monkeypatch.setattr(stored, "source_version", lambda source, revision=None: "1.0")
    store = tmp_path / "store"
    first = _eval(tmp_path, "a", chat_model, smol_instruct, store)
    files = sorted(str(p.relative_to(store)).rsplit("-", 1)[0] for p in store.rglob("*.json"))
    # the reference's two results and the base's in-context check; the trained model's none
    assert files == ["instructions/base-in-context", "instructions/reference", "report/reference"]
    report_file = next((store / "report").glob("reference-*.json"))
    kept = json.loads(report_file.read_text())
    assert kept["entry"] == first["report"]["reference"] and kept["provenance"]["machine"]
    assert len(kept["samples"]) == 8
    # a planted value shows that the next run takes the stored entry instead of measuring it
    kept["entry"]["seconds"] = 12345.6
    report_file.write_text(json.dumps(kept))
    again = _eval(tmp_path, "b", chat_model, smol_instruct, store)
    assert again["report"]["reference"]["seconds"] == 12345.6
    assert again["report"]["reference"]["stored"]["path"] == str(report_file)
    assert (tmp_path / "b" / "samples-reference.jsonl").read_text().count("\n") == 8
    assert {k: v for k, v in again["instructions"]["reference"].items() if k != "stored"} == first[
        "instructions"
    ]["reference"]
    assert "stored" not in again["report"]["trained"]
    # another generation budget is another key: measured again, and stored beside the first
    other = _eval(tmp_path, "c", chat_model, smol_instruct, store, max_new_tokens=6)
    assert other["report"]["reference"]["seconds"] != 12345.6 and "stored" not in other["report"]["reference"]
    assert len(list((store / "report").glob("reference-*.json"))) == 2


def test_a_local_folder_or_gguf_file_is_never_stored(tmp_path):
    assert stored.source_version(str(tmp_path)) is None
    assert stored.source_version("model.gguf") is None
    assert stored.source_version("google/gemma-3-270m", "abc123") == "abc123"
    assert stored.source_version("pypi:pytest") is not None
    assert stored.source_version("pypi:no-such-package-here") is None


def test_what_auto_resolves_to_finds_what_that_dtype_measured():
    """The key holds the resolved dtype; the model settings in it leave `dtype` out, so an AVX2 machine, where auto
    chooses float32, reuses the results measured with model.dtype=float32."""
    from instructify import config, pipeline

    fp32, auto = (config.load(None, [f"model.dtype={d}"]) for d in ("float32", "auto"))
    assert pipeline.model_shown(fp32) == pipeline.model_shown(auto)
    assert pipeline.model_shown(config.load(None, ["model.revision=abc"])) != pipeline.model_shown(auto)


def test_every_shipped_result_is_found_under_its_own_key():
    from pathlib import Path

    shipped = sorted((Path(__file__).parent.parent / "results").glob("*/*.json"))
    assert shipped
    for path in shipped:
        k = json.loads(path.read_text())["key"]
        assert stored.path_of(path.parent.parent, k) == path, path
        assert "dtype" not in k["shown"].get("model", {}), path
