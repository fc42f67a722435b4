"""GGUF export: the metadata that makes llama.cpp/Ollama stop reads back, transformers' own GGUF loader gives the
logits of model/, doctor passes ours and fails a GGUF whose eos is not the terminator, bad input is refused with
nothing left behind, and the Ollama Modelfile renders our ChatML."""

import json
import re
import shutil
import sys
from pathlib import Path

import gguf
import pytest
import torch
from conftest import CORPUS, TINY_SHAPE
from test_tools import CONVERSATIONS, TOOLS
from tokenizers import Tokenizer, models, normalizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaTokenizer,
)

from instructify import cli
from instructify.chat import template
from instructify.ship import doctor, gguf_export
from instructify.training.model import resolve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import ollama_parity  # noqa: E402  (the Go renderer and the line comparison scripts/ollama_parity.py uses)

# Max |logit difference| between model/ (float32) and the GGUF loaded back, on logits of the tiny models
# (|logit| < 5): bf16 keeps 8 bits of mantissa, f16 11, q8_0 8-bit blocks with an f16 scale.
TOLERANCE = {"bf16": 0.15, "f16": 0.02, "q8_0": 0.3}
PROMPTS = [
    [{"role": "user", "content": "hi there how are you doing today"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "what did you do this weekend"},
        {"role": "assistant", "content": "we went to the lake"},
        {"role": "user", "content": "that sounds like fun  12 x"},
    ],
]


def gemma_tokenizer() -> GemmaTokenizer:
    """Gemma's kind of tokenizer, small: sentencepiece-style BPE ('▁' for spaces, <0xNN> byte fallback), BOS."""
    spm = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    spm.normalizer = normalizers.Replace(" ", "\u2581")
    spm.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    spec = json.loads(spm.to_str())["model"]
    pieces = [p for p, _ in sorted(spec["vocab"].items(), key=lambda x: x[1]) if p != "<unk>"]
    head = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
    merges = [tuple(m) for m in spec["merges"]]
    tok = GemmaTokenizer(vocab={p: i for i, p in enumerate(head + pieces)}, merges=merges)
    tok.add_bos_token = True
    return tok


@pytest.fixture(scope="module")
def gemma_chat(tmp_path_factory):
    """A Gemma-3-shaped chat model GGUF can express: Gemma's tokenizer kind, six layers (the sixth global, as
    llama.cpp and transformers' GGUF loader assume), head_dim = query_pre_attn_scalar = 256; ChatML added and
    trained to stop."""
    torch.manual_seed(0)
    tok = gemma_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        **dict(TINY_SHAPE, num_hidden_layers=6),
        head_dim=256,
        query_pre_attn_scalar=256,
        max_position_embeddings=512,
        sliding_window=16,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = Gemma3ForCausalLM(config)
    tokens = template.add_chat_tokens(model, tok)
    with torch.no_grad():  # rows that look trained to doctor (not all at the mean); no training needed here
        for i in tokens.new_token_ids:
            model.get_input_embeddings().weight[i] += torch.randn(config.hidden_size) * 0.1
    folder = tmp_path_factory.mktemp("gemma-chat") / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(params=["gemma", "smol"])
def family(request, gemma_chat, smol_instruct, tmp_path):
    """A copy of each family's chat model in tmp_path/<name>/model, so the GGUF lands in tmp_path/<name>."""
    source = gemma_chat if request.param == "gemma" else smol_instruct
    folder = tmp_path / request.param / "model"
    shutil.copytree(source, folder)
    return folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTIFY_CACHE", str(tmp_path / "cache"))  # doctor converts GGUFs into this


def fields(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}, reader.tensors


def test_metadata_reads_back(family):
    path = gguf_export.write_gguf(family, "bf16")
    assert path == family.parent / f"{family.parent.name}-bf16.gguf"
    meta, tensors = fields(path)
    tok = AutoTokenizer.from_pretrained(family)
    im_end, im_start = tok.convert_tokens_to_ids([template.IM_END, template.IM_START])
    assert meta["tokenizer.ggml.eos_token_id"] == im_end and meta["tokenizer.ggml.eot_token_id"] == im_end
    config = json.loads((family / "config.json").read_text())
    arch = meta["general.architecture"]
    assert arch == {"gemma3_text": "gemma3", "llama": "llama"}[config["model_type"]]
    assert meta["general.file_type"] == gguf.LlamaFileType.MOSTLY_BF16
    # the template renders exactly the saved one, with no {% generation %} tag a C++ or jinja2 parser rejects
    gguf_template = meta["tokenizer.chat_template"]
    assert not re.search(r"\{%-?\s*(end)?generation", gguf_template)
    for conv in PROMPTS:
        assert tok.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=True, chat_template=gguf_template
        ) == tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    # every token id in place; ChatML and the other added special tokens are control tokens
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == config["vocab_size"] == len(types)
    assert all(tokens[i] == t for t, i in tok.get_vocab().items())
    assert types[im_end] == types[im_start] == gguf.TokenType.CONTROL
    assert {types[i] for i in tok.all_special_ids} == {gguf.TokenType.CONTROL}
    # BOS as the model uses it: Gemma adds one (the template writes it), SmolLM2 none
    assert meta["tokenizer.ggml.add_bos_token"] == (arch == "gemma3")
    assert meta.get("tokenizer.ggml.bos_token_id") == tok.bos_token_id
    # every weight, with transformers' shape (GGUF lists dimensions innermost first); a tied head is not repeated
    model = AutoModelForCausalLM.from_pretrained(family)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3 if arch == "gemma3" else gguf.MODEL_ARCH.LLAMA, 6)
    expected = {
        names.get_name(k, try_suffixes=(".weight",)): list(v.shape)
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"
    }
    assert {t.name: list(reversed(t.shape.tolist())) for t in tensors} == expected
    assert {t.tensor_type for t in tensors if len(t.shape) == 2} == {gguf.GGMLQuantizationType.BF16}
    assert {t.tensor_type for t in tensors if len(t.shape) == 1} == {gguf.GGMLQuantizationType.F32}


@pytest.mark.parametrize("dtype", ["bf16", "f16", "q8_0"])
def test_transformers_gguf_loader_gives_the_same_logits(family, dtype):
    path = gguf_export.write_gguf(family, dtype)
    tok = AutoTokenizer.from_pretrained(family)
    ours = AutoModelForCausalLM.from_pretrained(family, dtype=torch.float32)
    tok_gguf = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert tok_gguf.eos_token == template.IM_END
    for conv in PROMPTS:
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)
        ids_gguf = tok_gguf.apply_chat_template(
            conv, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        assert ids_gguf["input_ids"] == ids["input_ids"]  # same template, BOS and tokenisation
        x = torch.tensor([ids["input_ids"]])
        with torch.no_grad():
            a, b = ours(x).logits[0], loaded(x).logits[0]
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < TOLERANCE[dtype], (a - b).abs().max().item()
        assert torch.equal(a[-1].argmax(), b[-1].argmax())


def test_doctor_passes_ours_and_fails_a_gguf_whose_eos_is_not_the_terminator(family, monkeypatch, capsys):
    ours = gguf_export.write_gguf(family, "q8_0")
    assert doctor.report(doctor.diagnose(resolve(str(ours))))[1]
    assert cli.main(["doctor", str(ours)]) == 0
    # the common mistake: eos left as the base's end-of-text token
    base_eos = AutoTokenizer.from_pretrained(family).convert_tokens_to_ids(
        "<eos>" if "gemma" in str(family) else "<|endoftext|>"
    )
    monkeypatch.setattr(
        gguf.GGUFWriter,
        "add_eos_token_id",
        lambda self, i: self.add_uint32(gguf.Keys.Tokenizer.EOS_ID, base_eos),
    )
    bad = gguf_export.write_gguf(family, "q8_0", family.parent / "bad.gguf")
    assert fields(bad)[0]["tokenizer.ggml.eos_token_id"] == base_eos
    capsys.readouterr()
    assert cli.main(["doctor", str(bad)]) == 1
    assert re.search(r"FAIL eos agrees: tokenizer eos is \S+ \(\d+\)", capsys.readouterr().out)


def leftovers(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


def test_bad_input_is_refused_and_leaves_nothing(smol_like, gemma_chat, tmp_path, monkeypatch):
    with pytest.raises(gguf_export.GGUFError, match=r"unknown GGUF dtype 'q4_k'; use one of bf16, f16, q8_0"):
        gguf_export.write_gguf(gemma_chat, "q4_k")
    base = tmp_path / "base" / "model"
    shutil.copytree(smol_like, base)  # a base: no chat template
    with pytest.raises(gguf_export.GGUFError, match=r"doctor found problems[\s\S]*\nFAIL chat template"):
        gguf_export.write_gguf(base, "bf16")
    other = tmp_path / "other" / "model"
    shutil.copytree(gemma_chat, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(config, model_type="falcon_h1")))
    with pytest.raises(
        gguf_export.GGUFError, match="model_type 'falcon_h1'; GGUF export knows llama, mistral, granite"
    ):
        gguf_export.write_gguf(other, "bf16")
    # a global second layer, which GGUF's Gemma 3 cannot say (conftest's chat model has one)
    odd = tmp_path / "odd" / "model"
    shutil.copytree(gemma_chat, odd)
    layers = ["sliding_attention", "full_attention"] * 3
    (odd / "config.json").write_text(json.dumps(dict(config, layer_types=layers)))
    with pytest.raises(gguf_export.GGUFError, match="layer_types .* not expressible in GGUF"):
        gguf_export.write_gguf(odd, "bf16")
    # a failure while writing leaves neither a GGUF nor a temporary file
    good = tmp_path / "good" / "model"
    shutil.copytree(gemma_chat, good)

    def broken(*args):
        yield "token_embd.weight", torch.zeros(4, 4).numpy()
        raise OSError("disk full")

    monkeypatch.setattr(gguf_export, "_tensors", broken)
    with pytest.raises(OSError, match="disk full"):
        gguf_export.write_gguf(good, "bf16")
    for folder in (base, other, odd, good):
        assert leftovers(folder) == [], leftovers(folder)


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    """scripts/ollama_render.go built with Debian's Go (`make test` installs golang-go): Ollama's way of rendering
    a Modelfile TEMPLATE, with the real text/template and encoding/json."""
    if shutil.which("go") is None:
        pytest.fail("no `go` on PATH: `make test` installs Debian's golang-go (apt-get install golang-go)")
    binary = ollama_parity.build_renderer(tmp_path_factory.mktemp("go"))

    def render(modelfile: str, messages: list[dict], tools_: list | None = None) -> str:
        go_template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
        system = re.search(r'^SYSTEM """(.*?)"""$', modelfile, re.S | re.M)
        return ollama_parity.go_render(
            binary, go_template, messages, tools_, system.group(1) if system else ""
        )

    return render


@pytest.mark.parametrize("system_prompt", [None, "You are a kind friend."])
def test_modelfile_template_renders_our_chatml(gemma_chat, tmp_path, go_render, system_prompt):
    tok = AutoTokenizer.from_pretrained(gemma_chat)
    tok.chat_template = template.chatml_template(True, system_prompt)
    text = gguf_export.modelfile(tmp_path / "run-bf16.gguf", tok)
    assert text.splitlines()[0] == "FROM ./run-bf16.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in text.splitlines()
    assert ("SYSTEM" in text) == bool(system_prompt)
    conversations_ = [PROMPTS[0], PROMPTS[1], template.PROBE[1:6]]
    for conv in conversations_:
        ours = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        # the runner adds the BOS the GGUF asks for (add_bos_token); the Go template has none
        assert ours.startswith(tok.bos_token)
        assert go_render(text, conv) == ours[len(tok.bos_token) :]


@pytest.mark.parametrize("system_prompt", [None, "You are a kind friend."])
@pytest.mark.parametrize("shape", list(CONVERSATIONS))
def test_modelfile_template_renders_our_tool_chatml(gemma_chat, tmp_path, go_render, system_prompt, shape):
    """With tools, Ollama's render is ours line for line; only the JSON is written Go's way (compact, schema
    fields in Ollama's order), the same values."""
    tok = AutoTokenizer.from_pretrained(gemma_chat)
    tok.chat_template = template.chatml_template(True, system_prompt)
    text = gguf_export.modelfile(tmp_path / "run-bf16.gguf", tok)
    conv = CONVERSATIONS[shape]
    ours = tok.apply_chat_template(conv, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    go = go_render(text, conv, TOOLS)
    assert ollama_parity.json_lines(go) == ollama_parity.json_lines(ours[len(tok.bos_token) :])
    assert '{"name":"add","description":"Add two integers.","parameters":{"type":"object","required":' in go


def test_modelfile_decodes_as_generation_config(tmp_path, gemma_chat):
    tok = AutoTokenizer.from_pretrained(gemma_chat)
    path = tmp_path / "run-bf16.gguf"
    sampled = gguf_export.modelfile(path, tok, {"do_sample": True, "temperature": 0.8, "top_p": 0.95})
    assert {"PARAMETER temperature 0.8", "PARAMETER top_p 0.95"} <= set(sampled.splitlines())
    greedy = gguf_export.modelfile(path, tok, {"eos_token_id": [1, 2]}).splitlines()
    assert "PARAMETER temperature 0" in greedy and not any("top_p" in line for line in greedy)


def test_cli_export_gguf(family, capsys):
    assert cli.main(["export", "--model", str(family), "--gguf", "q8_0"]) == 0
    path = family.parent / f"{family.parent.name}-q8_0.gguf"
    assert fields(path)[0]["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    modelfile = (family.parent / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{path.name}\n") and "PARAMETER temperature 0\n" in modelfile
    assert cli.main(["export", "--model", str(family), "--gguf", "fp8"]) == 1
    assert "error: unknown GGUF dtype 'fp8'" in capsys.readouterr().err
