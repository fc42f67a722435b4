"""`python -m train doctor PATH`: check any model folder for the mistakes that make chat models ramble on.

Each check prints PASS, WARN or FAIL with the fix for a failure; any FAIL makes the exit code non-zero. Reads the
tokenizer, config.json, generation_config.json and the embedding rows of the control tokens (safetensors, without
loading the model), so it is quick on any size of model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl.chat_template_utils import has_generation_markers

from train import template

PROBE = template.PROBE


@dataclass
class Check:
    name: str
    status: str  # PASS, WARN or FAIL
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:4} {self.name}: {self.detail}"
        return text + (f"\n     fix: {self.fix}" if self.fix and self.status != "PASS" else "")


def _ids(x) -> list[int]:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


def _special_ids(tok: PreTrainedTokenizerBase) -> set[int]:
    return {i for i, t in tok.added_tokens_decoder.items() if t.special}


def _embedding_rows(folder: Path) -> dict[str, torch.Tensor] | None:
    """{tensor name: all rows} for the input (and untied output) embedding, read lazily from safetensors."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a dict
                if key.endswith(("embed_tokens.weight", "wte.weight", "lm_head.weight")):
                    out[key] = st.get_tensor(key).float()
    return out or None


def diagnose(folder: str | Path) -> list[Check]:
    folder = Path(folder)
    checks: list[Check] = []
    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 - any load failure is the finding
        return [
            Check(
                "tokenizer",
                "FAIL",
                f"cannot load a tokenizer from {folder}: {e}",
                "point doctor at a model folder",
            )
        ]
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    config = config.get("text_config", config)
    gen_path = folder / "generation_config.json"
    generation = json.loads(gen_path.read_text()) if gen_path.is_file() else None
    special = _special_ids(tok)

    # --- template and its terminator
    if not tok.chat_template:
        has_chatml = template.IM_END in tok.get_vocab()
        checks.append(
            Check(
                "chat template",
                "FAIL",
                "tokenizer has no chat_template"
                + (
                    ""
                    if has_chatml
                    else f"; {template.IM_END} is not in the vocabulary: no ChatML turn terminator"
                ),
                "train it with instructify (`make train CONFIG=...`), which adds ChatML tokens and template",
            )
        )
        return checks
    try:
        prompt_ids = tok.apply_chat_template(
            PROBE[:2], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        full_ids = tok.apply_chat_template(PROBE[:3], tokenize=True, return_dict=True)["input_ids"]
    except Exception as e:  # noqa: BLE001 - a template that does not render is the finding
        checks.append(
            Check(
                "template renders",
                "FAIL",
                f"rendering a conversation failed: {e}",
                "fix the chat_template in tokenizer_config.json / chat_template.jinja",
            )
        )
        return checks
    checks.append(
        Check("template renders", "PASS", "system/user/assistant render, with and without generation prompt")
    )

    reply = full_ids[len(prompt_ids) :]
    terminator = next((i for i in reply if i in special), None)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        checks.append(
            Check(
                "train/inference parity",
                "FAIL",
                "the generation prompt is not a prefix of the rendered conversation: the model sees "
                "different tokens at inference than in training",
                "make add_generation_prompt emit exactly the assistant header the template uses",
            )
        )
    if terminator is None:
        checks.append(
            Check(
                "turn terminator",
                "FAIL",
                "no special token closes the assistant reply",
                f"end each assistant turn with a special token such as {template.IM_END}",
            )
        )
        return checks
    term = tok.convert_ids_to_tokens(terminator)
    checks.append(Check("turn terminator", "PASS", f"assistant turns end with {term} ({terminator})"))

    # --- eos in the three places a runtime reads
    tok_eos, cfg_eos = tok.eos_token_id, _ids(config.get("eos_token_id"))
    gen_eos = _ids(generation.get("eos_token_id")) if generation else []
    problems = []
    if tok_eos != terminator:
        problems.append(f"tokenizer eos is {tok.eos_token} ({tok_eos})")
    if terminator not in cfg_eos:
        problems.append(f"config.json eos_token_id {cfg_eos or None} lacks it")
    if generation is None:
        problems.append("generation_config.json is missing")
    elif terminator not in gen_eos:
        problems.append(f"generation_config.json eos_token_id {gen_eos or None} lacks it")
    checks.append(
        Check(
            "eos agrees",
            "FAIL" if problems else "PASS",
            "; ".join(problems) + f" (turn terminator {term} = {terminator})"
            if problems
            else f"tokenizer, config and generation_config all stop on {term}",
            f"set eos to {term} in the tokenizer, config.json and generation_config.json (a list there may keep the "
            "original eos too)",
        )
    )
    pad = tok.pad_token_id
    if pad is not None and pad in set(gen_eos) | set(cfg_eos) | {tok_eos}:
        checks.append(
            Check(
                "pad vs eos",
                "WARN",
                f"pad {tok.pad_token} ({pad}) is an eos id: harmless at inference, but training with it "
                "masks the terminator out of the loss in many collators",
                "use a distinct pad token when training (instructify does)",
            )
        )
    else:
        checks.append(Check("pad vs eos", "PASS", f"pad {tok.pad_token} ({pad}) is not an eos id"))

    # --- control tokens: single special tokens with trained-looking rows
    controls = [template.IM_START, template.IM_END] if term == template.IM_END else [term]
    rows = _embedding_rows(folder)
    for t in controls:
        i = tok.convert_tokens_to_ids(t)
        pieces = tok(t, add_special_tokens=False)["input_ids"]
        if i is None or i == tok.unk_token_id or pieces != [i] or i not in special:
            checks.append(
                Check(
                    f"token {t}",
                    "FAIL",
                    f"{t} is not a single special token (tokenises to {pieces})",
                    f"add {t} as a special token and resize the embeddings",
                )
            )
            continue
        found = [p for name, w in (rows or {}).items() if (p := template.row_problem(w, i))]
        status = "FAIL" if found else "PASS"
        detail = (
            "; ".join(found)
            if found
            else f"single special token {i}"
            + (", embedding row looks trained" if rows else " (no safetensors weights to inspect)")
        )
        checks.append(
            Check(
                f"token {t}",
                status,
                detail,
                "initialise the row (mean of rows) and train it (PEFT trainable tokens)",
            )
        )

    # --- BOS: exactly one where the model uses one
    bos = tok.bos_token_id
    uses_bos = bos is not None and tok("a")["input_ids"][:1] == [bos]
    n_bos = full_ids.count(bos) if bos is not None else 0
    if not uses_bos:
        checks.append(Check("one BOS", "PASS", "the tokenizer adds no BOS: none expected"))
    elif n_bos != 1 or full_ids[0] != bos:
        checks.append(
            Check(
                "one BOS",
                "FAIL",
                f"rendered conversation has {n_bos} BOS tokens; the model expects 1, first",
                "start the template with {{ bos_token }} once and tokenise with tokenize=True, not "
                "render-then-tokenise with add_special_tokens=True",
            )
        )
    else:
        checks.append(Check("one BOS", "PASS", "exactly one BOS, first"))

    # --- the training path (train/template.py encode) gives the ids the saved template gives at inference
    found = template.chatml_equivalent(tok) if term == template.IM_END else None
    chatml = found[0] if found else None
    if chatml is not None:
        tokens = template.ChatTokens(
            tok.convert_tokens_to_ids(template.IM_START),
            terminator,
            pad,
            gen_eos,
            [],
            bos if found[1] else None,
            found[2],
        )
        (enc,) = template.encode(tok, [PROBE], tokens)
        same = enc.input_ids == tok.apply_chat_template(PROBE, tokenize=True, return_dict=True)["input_ids"]
        checks.append(
            Check(
                "train/inference parity",
                "PASS" if same else "FAIL",
                "training tokenisation equals apply_chat_template"
                if same
                else "training tokenisation differs from apply_chat_template",
                "report this tokenizer: instructify's ChatML encoder disagrees with its template",
            )
        )

    # --- assistant mask: each reply and its terminator, nothing else
    markers = tok.chat_template if has_generation_markers(tok.chat_template) else chatml
    if markers is None:
        checks.append(
            Check(
                "assistant mask",
                "WARN",
                "template has no {% generation %} markers and is not ChatML",
                "add {% generation %}...{% endgeneration %} around each reply and its terminator",
            )
        )
        return checks
    out = tok.apply_chat_template(
        PROBE, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, chat_template=markers
    )
    spans = template.trained_spans(out["input_ids"], out["assistant_masks"])
    expected = [m["content"] for m in PROBE if m["role"] == "assistant"]
    got = [tok.decode(s[:-1]).strip() for s in spans]
    ok = got == expected and all(s[-1] == terminator for s in spans)
    note = (
        ""
        if markers is tok.chat_template
        else " (template has no markers; instructify trains with ChatML + markers)"
    )
    checks.append(
        Check(
            "assistant mask",
            "PASS" if ok else "FAIL",
            f"covers the {len(expected)} replies and their {term}, nothing else{note}"
            if ok
            else f"trained spans {got!r} differ from the replies {expected!r} + {term}",
            "put {% generation %} around exactly the reply and its terminator",
        )
    )
    return checks


def report(checks: list[Check]) -> tuple[str, bool]:
    ok = not any(c.status == "FAIL" for c in checks)
    lines = [c.line() for c in checks]
    lines.append(
        "doctor: "
        + ("all checks passed" if ok else f"{sum(c.status == 'FAIL' for c in checks)} check(s) failed")
    )
    return "\n".join(lines), ok
