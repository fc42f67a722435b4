"""Write an exported model folder as one GGUF file (llama.cpp, Ollama, LM Studio) and an Ollama Modelfile.

Built on the `gguf` package's `GGUFWriter`, tensor-name tables and quantizers. Our own code is only what it lacks
without llama.cpp's `convert_hf_to_gguf.py` (a 10k-line script that is not on PyPI): each architecture's metadata
and weight layout (gguf_arch), and the vocabulary read from `tokenizer.json` (gguf_vocab), where the added tokens
become control tokens, eos is the turn terminator `<|im_end|>` (also eot) and the chat template is the run's ChatML.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np
from safetensors import safe_open
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from instructify.chat import template
from instructify.ship import doctor, gguf_arch, gguf_vocab
from instructify.ship.gguf_vocab import GGUFError
from instructify.ship.ollama import modelfile

log = logging.getLogger(__name__)

# dtype of the 2-D weights; norms and other 1-D tensors stay float32, as llama.cpp's own converter writes them.
DTYPES = {
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}


def gguf_path(folder: Path, dtype: str) -> Path:
    """`runs/<name>/<name>-<dtype>.gguf` beside `model/`, or `<folder>-<dtype>.gguf` for another folder."""
    name = folder.parent.name if folder.name == "model" else folder.name
    return folder.parent / f"{name}-{dtype}.gguf"


def inference_template(tok: PreTrainedTokenizerBase) -> str:
    """The chat template without `{% generation %}` markers (a transformers extension that llama.cpp's and
    jinja2's parsers reject), checked to render exactly as the saved one."""
    plain = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", tok.chat_template)
    for a, b, gen in ((0, 7, False), (1, 4, True), (1, 2, True)):
        conv = template.PROBE[a:b]
        same = tok.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=gen, chat_template=plain
        ) == tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        if not same:
            raise GGUFError("the chat template renders differently without its {% generation %} markers")
    return plain


def _check_architecture(config: dict) -> gguf_arch.Arch:
    kind = config.get("model_type")
    if kind not in gguf_arch.ARCHITECTURES:
        raise GGUFError(
            f"config.json: model_type {kind!r}; GGUF export knows {', '.join(gguf_arch.ARCHITECTURES)}; for other "
            "models use llama.cpp's convert_hf_to_gguf.py on the folder"
        )
    spec = gguf_arch.ARCHITECTURES[kind]
    if problems := spec.problems(config):
        raise GGUFError(f"config.json: {kind} with {'; '.join(problems)}: not expressible in GGUF here")
    return spec


def _write_metadata(
    w: gguf.GGUFWriter, config: dict, spec: gguf_arch.Arch, name: str, file_type: int
) -> None:
    dim = gguf_arch.head_dim(config)
    # llama.cpp strips the whitespace after every special token of a model whose general.name holds "phi3" or
    # "phi-3" (its fix for Phi-3's own tokenizer), which would drop the newline our ChatML puts after <|im_end|>
    w.add_name(re.sub(r"(?i)(phi)-?(3)", r"\1_\2", name))
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    theta = gguf_arch.rope(config).get("rope_theta", config.get("rope_theta", 10_000.0))
    w.add_rope_freq_base(float(theta))
    w.add_key_length(dim)
    w.add_value_length(dim)
    spec.metadata(w, config)


def _write_tokenizer(
    w: gguf.GGUFWriter, vocab: gguf_vocab.Vocab, tok: PreTrainedTokenizerBase, chat_template: str
) -> None:
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    im_end = tok.convert_tokens_to_ids(template.IM_END)
    w.add_eos_token_id(im_end)  # what llama.cpp, Ollama and LM Studio stop on
    w.add_eot_token_id(im_end)
    if tok.bos_token_id is not None:
        w.add_bos_token_id(tok.bos_token_id)
    w.add_add_bos_token(template.adds_bos(tok))  # Gemma: one <bos>, which the template writes; SmolLM2: none
    w.add_add_eos_token(False)
    if vocab.model == "llama":
        w.add_add_space_prefix(vocab.space_prefix)
    if tok.unk_token_id is not None:
        w.add_unk_token_id(tok.unk_token_id)
    if tok.pad_token_id is not None:
        w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(chat_template)


def _tensors(folder: Path, config: dict, spec: gguf_arch.Arch):
    """(GGUF name, float32 numpy array) for every weight, in llama.cpp's layout."""
    names = gguf.get_tensor_name_map(spec.arch, config["num_hidden_layers"])
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GGUFError(f"{folder}: no *.safetensors weights")
    yield from spec.extra_tensors(config)
    for f in files:
        with safe_open(str(f), "pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a dict
                if key == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # llama.cpp reuses token_embd when there is no output tensor
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise GGUFError(f"{f.name}: tensor {key} has no GGUF name for {spec.arch.name.lower()}")
                yield name, gguf_arch.layout(spec, config, key, st.get_tensor(key).float()).numpy()


def _encode(
    data: np.ndarray, qtype: gguf.GGMLQuantizationType
) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    if data.ndim == 1:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
        qtype = gguf.GGMLQuantizationType.F16  # q8_0 blocks are 32 wide; llama.cpp's converter falls back too
    return gguf.quants.quantize(data, qtype), qtype


def write_gguf(folder: Path, dtype: str = "bf16", out: Path | None = None) -> Path:
    """`folder` (a model folder doctor accepts) as one GGUF file; written under a temporary name, then renamed."""
    folder = Path(folder)
    if dtype not in DTYPES:
        raise GGUFError(f"unknown GGUF dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if not (folder / "config.json").is_file():
        raise GGUFError(f"{folder}: no model folder (config.json missing); run `make train` first")
    config = json.loads((folder / "config.json").read_text())
    config = config.get("text_config", config)
    spec = _check_architecture(config)  # first: a model GGUF cannot hold is refused before any loading
    text, ok = doctor.report(doctor.diagnose(folder))
    if not ok:
        raise GGUFError(f"{folder}: doctor found problems; not writing a GGUF that would not stop:\n{text}")
    tok = AutoTokenizer.from_pretrained(folder)
    vocab = gguf_vocab.read_vocab(folder, config["vocab_size"])
    chat_template = inference_template(tok)
    qtype, file_type = DTYPES[dtype]
    out = Path(out) if out else gguf_path(folder, dtype)

    t0 = time.time()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[spec.arch])
        _write_metadata(w, config, spec, out.stem, file_type)
        _write_tokenizer(w, vocab, tok, chat_template)
        for name, data in _tensors(folder, config, spec):
            data, raw = _encode(data, qtype)
            w.add_tensor(name, data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's 0600 would keep the file from other users' engines
        os.replace(tmp, out)  # atomic: a GGUF under its final name is always complete
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("wrote %s (%s, %.0f MB) in %.1f s", out, dtype, out.stat().st_size / 1e6, time.time() - t0)
    return out


def export_gguf(folder: Path, dtype: str) -> tuple[Path, Path]:
    """The GGUF beside `folder` and an Ollama `Modelfile` naming it."""
    path = write_gguf(folder, dtype)
    mf = path.parent / "Modelfile"
    gen_path = Path(folder) / "generation_config.json"
    generation = json.loads(gen_path.read_text()) if gen_path.is_file() else None
    mf.write_text(modelfile(path, AutoTokenizer.from_pretrained(folder), generation))
    log.info("wrote %s: ollama create %s -f %s", mf, path.parent.name, mf)
    return path, mf
