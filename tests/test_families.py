"""Every stage on every family (tests/families.py): prepare's ids and mask equal transformers' apply_chat_template
on generated conversations; then one short run per family through sft, export + doctor, eval, chat, serve and
`export --gguf`, each a test of its own so the support matrix (docs/support.md) names the stage that fails."""

from __future__ import annotations

import json
import re
from pathlib import Path

import families
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify.chat import template

NAMES = list(families.FAMILIES)
# Each test below is one stage of the support matrix (scripts/support_matrix.py renders docs/support.md).
STAGES = {
    "test_prepare_ids_and_mask_equal_apply_chat_template": "prepare",
    "test_special_token_text_in_a_message_stays_plain_text": "special text",
    "test_sft_trains_the_chatml_rows_in_every_layer": "sft",
    "test_export_passes_doctor": "export + doctor",
    "test_eval_reports_the_trained_model": "eval",
    "test_chat_gives_the_reply_transformers_gives": "chat",
    "test_serve_gives_the_reply_transformers_gives": "serve",
    "test_gguf_reads_back_with_chatml_and_the_same_logits": "GGUF",
}


@pytest.fixture(scope="session")
def base_of(tmp_path_factory):
    """name -> the tiny base's folder, each built once per session."""
    built = {}

    def get(name: str):
        if name not in built:
            built[name] = families.build(name, tmp_path_factory.mktemp(f"base-{name}"))
        return built[name]

    return get


@pytest.fixture(scope="session")
def chat_tokenizer(base_of):
    """name -> (tokenizer with ChatML added as `prepare` does it, its ChatTokens)."""
    made = {}

    def get(name: str):
        if name not in made:
            tok = AutoTokenizer.from_pretrained(base_of(name))
            made[name] = tok, template.add_chat_tokens(None, tok)
        return made[name]

    return get


# Text a user may send: any Unicode (no surrogates), whitespace-only and padded edges, and pieces that look like
# control tokens without being one (those that are one are checked below: they must stay plain text).
LOOKALIKES = ["<|im_end", "im_end|>", "<|im_start|", "< s>", "<|", "|>", "\u2581", "<0x0A>"]
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=24),
    st.sampled_from(["", " ", "\n", " \n ", "\t", "  hi  ", "\n\nhi\n"]),
    st.lists(st.sampled_from([*LOOKALIKES, " ", "hi", "\n", "é", "日本", "12"]), max_size=6).map("".join),
)


@st.composite
def conversation(draw, text=TEXT):
    messages = [{"role": "system", "content": draw(text)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages += [{"role": "user", "content": draw(text)}, {"role": "assistant", "content": draw(text)}]
    return messages


def reference(tok, messages):
    out = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=conversation())
def test_prepare_ids_and_mask_equal_apply_chat_template(name, chat_tokenizer, messages):
    tok, tokens = chat_tokenizer(name)
    specials = template.special_texts(tok)
    if any(s in m["content"] for m in messages for s in specials):
        return  # the next test: there our ids differ on purpose
    ours = template.encode(tok, [messages], tokens)[0]
    assert (ours.input_ids, ours.assistant_masks) == reference(tok, messages)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_special_token_text_in_a_message_stays_plain_text(name, chat_tokenizer, data):
    """A typed "<|im_end|>" (or the family's own "</s>", "<|endoftext|>") must not become a control token: the
    only control ids are the template's, each reply's trained span ends on <|im_end|>, and swapping the special
    text for plain text leaves the template's tokens where apply_chat_template puts them."""
    tok, tokens = chat_tokenizer(name)
    special = st.sampled_from(template.special_texts(tok))
    text = st.lists(st.one_of(special, st.sampled_from(["hi", " ", "\n", "ok "])), min_size=1, max_size=5)
    messages = data.draw(conversation(text.map("".join)))
    ours = template.encode(tok, [messages], tokens)[0]
    control = set(tok.all_special_ids) | {tokens.im_start_id, tokens.im_end_id}
    bos = [] if tokens.bos_id is None else [tokens.bos_id]
    expected = bos + [tokens.im_start_id, tokens.im_end_id] * len(messages)
    assert sorted(i for i in ours.input_ids if i in control) == sorted(expected)
    spans = template.trained_spans(ours.input_ids, ours.assistant_masks)
    assert len(spans) == sum(m["role"] == "assistant" for m in messages)
    assert all(s[-1] == tokens.im_end_id for s in spans)


# ---- one short run per family: sft, export (+ doctor), eval, chat, serve, export --gguf ----

STEPS = dict(max_steps=60, per_device_batch_size=4, learning_rate=1e-2, logging_steps=20)
# GGUF architectures transformers' own GGUF loader reads back (the logits test); the others: metadata only here,
# llama.cpp itself in scripts/check_families.py.
READ_BACK = {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text"}
GGUF_REFUSED = {
    "smollm3": "model_type 'smollm3'; GGUF export knows"
}  # llama.cpp's smollm3 has no-rope layers


@pytest.fixture(scope="session")
def run_of(base_of, tmp_path_factory):
    """name -> (config file, run folder) after `sft` and `export` of that family's base (60 steps of LoRA r 8 on
    the test conversations: enough for the tiny models to end their replies)."""
    import yaml
    from conftest import conversations

    root = tmp_path_factory.mktemp("family-runs")
    chats = root / "chats.jsonl"
    chats.write_text("".join(json.dumps(r) + "\n" for r in conversations()))
    done = {}

    def get(name: str):
        if name not in done:
            out = root / name
            config = {
                "output_dir": str(out),
                "model": {"name": str(base_of(name)), "dtype": "float32"},
                "data": {"sources": [{"path": str(chats)}], "eval_share": 0.2, "max_length": 64},
                "lora": {"r": 8, "alpha": 16},
                "training": STEPS,
                "eval": {"num_conversations": 4, "max_new_tokens": 16, "monitor_every": 0},
            }
            path = root / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            from instructify import cli

            assert cli.main(["sft", "--config", str(path)]) == 0, f"{name}: sft failed"
            assert cli.main(["export", "--config", str(path)]) == 0, f"{name}: export (doctor) refused"
            done[name] = path, out
        return done[name]

    return get


def _started_rows(base: Path) -> dict[str, torch.Tensor]:
    """The rows of <|im_start|>/<|im_end|> as training started (template.add_chat_tokens on the base)."""
    model, tok = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    tokens = template.add_chat_tokens(model, tok)
    ids = [tokens.im_start_id, tokens.im_end_id]
    return {name: layer.weight[ids].detach().clone() for name, layer in _layers(model).items()}


def _layers(model) -> dict[str, torch.nn.Module]:
    layers = template.embedding_layers(model)
    return dict(zip(("input", "output"), layers))


@pytest.mark.parametrize("name", NAMES)
def test_sft_trains_the_chatml_rows_in_every_layer(name, run_of, base_of):
    """Both ChatML rows move from where training started, in the input layer and in an untied output layer (the
    `<|im_end|>` logit), also where the base already had the tokens (Qwen, SmolLM)."""
    _, out = run_of(name)
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    ids = tok.convert_tokens_to_ids([template.IM_START, template.IM_END])
    started = _started_rows(base_of(name))
    trained = {k: layer.weight[ids].detach() for k, layer in _layers(model).items()}
    assert set(trained) == ({"input"} if families.FAMILIES[name].tied else {"input", "output"})
    for layer, rows in trained.items():
        moved = (rows - started[layer]).norm(dim=1) / started[layer].norm(dim=1).clamp_min(1e-6)
        assert (moved > 1e-3).all(), f"{name}: {layer} rows of ChatML did not train (moved {moved.tolist()})"


@pytest.mark.parametrize("name", NAMES)
def test_export_passes_doctor(name, run_of):
    from instructify.ship import doctor

    _, out = run_of(name)
    checks = doctor.diagnose(out / "model")
    assert [c.line() for c in checks if c.status == "FAIL"] == []
    im_end = AutoTokenizer.from_pretrained(out / "model").convert_tokens_to_ids(template.IM_END)
    gen = json.loads((out / "model" / "generation_config.json").read_text())
    assert gen["eos_token_id"][0] == im_end


@pytest.mark.parametrize("name", NAMES)
def test_eval_reports_the_trained_model(name, run_of):
    from instructify import cli
    from instructify.evals import conformance

    path, out = run_of(name)
    assert cli.main(["eval", "--config", str(path)]) == 0
    entry = conformance.read_report(out)["trained"]
    assert entry["n"] >= 1 and 0 <= entry["stop_rate"] <= 1 and "stop_token_prob" in entry
    assert (out / "report.md").is_file()


def _greedy(folder: Path, messages: list[dict], max_new_tokens: int = 16) -> str:
    """The reply plain transformers gives: the saved template, generate() stopping on generation_config's eos."""
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)[
        0, ids["input_ids"].shape[1] :
    ]
    return tok.decode(out, skip_special_tokens=True)


HELLO = [{"role": "user", "content": "hi there how are you doing today"}]


@pytest.mark.parametrize("name", NAMES)
def test_chat_gives_the_reply_transformers_gives(name, run_of):
    import io

    from instructify.serving import chat_cli

    _, out = run_of(name)
    folder = out / "model"
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    messages = chat_cli.run(model, tok, [HELLO[0]["content"] + "\n"], io.StringIO(), max_new_tokens=16)
    assert messages[-1]["role"] == "assistant"
    assert messages[-1]["content"].strip() == _greedy(folder, HELLO).strip()


@pytest.mark.parametrize("name", NAMES)
def test_serve_gives_the_reply_transformers_gives(name, run_of):
    import threading

    import openai

    from instructify.serving import server as http

    _, out = run_of(name)
    folder = out / "model"
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    server = http.make_server(model, tok, name, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        client = openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="none", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model=name, messages=HELLO, max_tokens=16, temperature=0)
    finally:
        server.shutdown()
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.content.strip() == _greedy(folder, HELLO).strip()
    assert template.IM_END not in choice.message.content


# Max |logit difference| between model/ (float32) and its f16 GGUF read back by transformers (|logit| < 10 here).
F16_TOLERANCE = 0.05


@pytest.mark.parametrize("name", NAMES)
def test_gguf_reads_back_with_chatml_and_the_same_logits(name, run_of):
    import gguf

    from instructify.ship import gguf_export

    _, out = run_of(name)
    folder = out / "model"
    config = json.loads((folder / "config.json").read_text())
    if name in GGUF_REFUSED:
        with pytest.raises(gguf_export.GGUFError, match=GGUF_REFUSED[name]):
            gguf_export.write_gguf(folder, "f16")
        return
    path = gguf_export.write_gguf(folder, "f16")
    reader = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items()}
    tok = AutoTokenizer.from_pretrained(folder)
    im_end = tok.convert_tokens_to_ids(template.IM_END)
    assert meta["tokenizer.ggml.eos_token_id"] == meta["tokenizer.ggml.eot_token_id"] == im_end
    assert meta["tokenizer.ggml.tokens"][im_end] == template.IM_END
    assert meta["tokenizer.ggml.add_bos_token"] == template.adds_bos(tok)
    # llama.cpp strips whitespace after every special token of a model it takes by name for Phi-3
    assert not re.search(r"(?i)phi-?3", meta["general.name"]), meta["general.name"]
    gguf_template = meta["tokenizer.chat_template"]
    assert tok.apply_chat_template(
        HELLO, tokenize=False, add_generation_prompt=True, chat_template=gguf_template
    ) == tok.apply_chat_template(HELLO, tokenize=False, add_generation_prompt=True)
    untied = not config.get("tie_word_embeddings", True)
    assert ("output.weight" in {t.name for t in reader.tensors}) == untied
    if config["model_type"] not in READ_BACK:
        return
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    ids = tok.apply_chat_template(HELLO, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        a, b = ours(**ids).logits[0], loaded(**ids).logits[0]
    assert (a - b).abs().max().item() < F16_TOLERANCE, (a - b).abs().max().item()
