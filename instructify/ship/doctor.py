"""`instructify doctor PATH`: check any model folder for the mistakes that make chat models ramble on.

Each check is one small function over what was read from the folder (`Folder`), run from `CHECKS` in order, as
`brew doctor` and `pip check` do; a new check is one function added to the list. Each prints PASS, WARN, FAIL (with
the fix) or SKIP (it needs something an earlier finding says is missing); any FAIL makes the exit code non-zero.
Reads the tokenizer, config.json, generation_config.json and the embedding rows of the control tokens
(safetensors, without loading the model), so it is quick on any size of model.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl.chat_template_utils import has_generation_markers

from instructify.chat import template, tools

PROBE = template.PROBE


@dataclass
class Check:
    name: str
    status: str  # PASS, WARN, FAIL or SKIP
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:4} {self.name}: {self.detail}"
        return text + (f"\n     fix: {self.fix}" if self.fix and self.status in ("WARN", "FAIL") else "")


def _ids(x) -> list[int]:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


def _embedding_rows(folder: Path) -> dict[str, torch.Tensor] | None:
    """{tensor name: all rows} for the input (and untied output) embedding, read lazily from safetensors."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a dict
                if key.endswith(("embed_tokens.weight", "wte.weight", "lm_head.weight")):
                    out[key] = st.get_tensor(key).float()
    return out or None


class Folder:
    """What the checks read, each piece once; a piece that cannot be had is None and `error` says why."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder)
        self.error: dict[str, str] = {}
        self.tok: PreTrainedTokenizerBase | None = None
        try:
            self.tok = AutoTokenizer.from_pretrained(self.path)
        except Exception as e:  # noqa: BLE001 - any load failure is the finding
            self.error["tok"] = str(e)
        config_path, gen_path = self.path / "config.json", self.path / "generation_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self.config: dict = config.get("text_config", config)
        self.generation: dict | None = json.loads(gen_path.read_text()) if gen_path.is_file() else None
        self.special: set[int] = set()
        self.prompt_ids: list[int] | None = None  # system + user, with the generation prompt
        self.full_ids: list[int] | None = None  # the whole probe conversation
        if self.template is not None:
            self.special = {i for i, t in self.tok.added_tokens_decoder.items() if t.special}
            try:
                self.prompt_ids = self.tok.apply_chat_template(
                    PROBE[:2], add_generation_prompt=True, tokenize=True, return_dict=True
                )["input_ids"]
                self.full_ids = self.tok.apply_chat_template(PROBE[:3], tokenize=True, return_dict=True)[
                    "input_ids"
                ]
            except Exception as e:  # noqa: BLE001 - a template that does not render is the finding
                self.error["full_ids"] = str(e)
        reply = self.full_ids[len(self.prompt_ids) :] if self.full_ids is not None else []
        # the first special token of the reply: what closes an assistant turn
        self.terminator: int | None = next((i for i in reply if i in self.special), None)
        self.term = self.tok.convert_ids_to_tokens(self.terminator) if self.terminator is not None else None

    @property
    def template(self) -> str | None:
        return (self.tok.chat_template or None) if self.tok is not None else None

    @functools.cached_property
    def rows(self) -> dict[str, torch.Tensor] | None:
        return _embedding_rows(self.path)

    @functools.cached_property
    def chatml(self) -> template.ChatmlMatch | None:
        """Our ChatML template with {% generation %} markers when the folder's renders the same, else None."""
        return template.chatml_equivalent(self.tok) if self.term == template.IM_END else None

    def eos_ids(self) -> tuple[int | None, list[int], list[int]]:
        """(tokenizer eos, config.json eos ids, generation_config.json eos ids)."""
        gen = _ids(self.generation.get("eos_token_id")) if self.generation else []
        return self.tok.eos_token_id, _ids(self.config.get("eos_token_id")), gen


# What a check may need, and how its SKIP line names it.
NEEDS = {
    "tok": "a tokenizer",
    "template": "a chat template",
    "full_ids": "a rendered conversation",
    "terminator": "a turn terminator",
}

Finding = tuple[str, str, str]  # (status, detail, fix)


def check(name: str, needs: tuple[str, ...] = ()) -> Callable:
    """A check named `name`: returns a Check (or several, for per-token checks), or SKIP when the folder lacks
    one of `needs` (an earlier check reports why)."""

    def wrap(fn: Callable[[Folder], Finding | list[Check]]) -> Callable[[Folder], list[Check]]:
        @functools.wraps(fn)
        def run(folder: Folder) -> list[Check]:
            missing = [NEEDS[n] for n in needs if getattr(folder, n) is None]
            if missing:
                return [Check(name, "SKIP", f"needs {' and '.join(missing)}")]
            found = fn(folder)
            return found if isinstance(found, list) else [Check(name, *found)]

        run.check_name = name
        return run

    return wrap


@check("tokenizer")
def tokenizer_loads(f: Folder) -> Finding:
    if f.tok is None:
        return (
            "FAIL",
            f"cannot load a tokenizer from {f.path}: {f.error['tok']}",
            "point doctor at a model folder",
        )
    return "PASS", f"{len(f.tok)} tokens", ""


@check("chat template", needs=("tok",))
def has_template(f: Folder) -> Finding:
    if f.template:
        return "PASS", "the tokenizer has a chat_template", ""
    chatml = template.IM_END in f.tok.get_vocab()
    return (
        "FAIL",
        "tokenizer has no chat_template"
        + ("" if chatml else f"; {template.IM_END} is not in the vocabulary: no ChatML turn terminator"),
        "train it with instructify (`make train CONFIG=...`), which adds ChatML tokens and template",
    )


@check("template renders", needs=("template",))
def renders(f: Folder) -> Finding:
    if f.full_ids is None:
        return (
            "FAIL",
            f"rendering a conversation failed: {f.error['full_ids']}",
            "fix the chat_template in tokenizer_config.json / chat_template.jinja",
        )
    return "PASS", "system/user/assistant render, with and without generation prompt", ""


@check("generation prompt", needs=("full_ids",))
def prompt_is_prefix(f: Folder) -> Finding:
    """The tokens a model is prompted with at inference are the ones it saw before each reply in training."""
    if f.full_ids[: len(f.prompt_ids)] != f.prompt_ids:
        return (
            "FAIL",
            "the generation prompt is not a prefix of the rendered conversation: the model sees different tokens "
            "at inference than in training",
            "make add_generation_prompt emit exactly the assistant header the template uses",
        )
    return "PASS", "the generation prompt is a prefix of the rendered conversation", ""


@check("turn terminator", needs=("full_ids",))
def has_terminator(f: Folder) -> Finding:
    if f.terminator is None:
        return (
            "FAIL",
            "no special token closes the assistant reply",
            f"end each assistant turn with a special token such as {template.IM_END}",
        )
    return "PASS", f"assistant turns end with {f.term} ({f.terminator})", ""


@check("eos agrees", needs=("terminator",))
def eos_agrees(f: Folder) -> Finding:
    """The three places a runtime reads its stop token all name the turn terminator."""
    tok_eos, cfg_eos, gen_eos = f.eos_ids()
    problems = []
    if tok_eos != f.terminator:
        problems.append(f"tokenizer eos is {f.tok.eos_token} ({tok_eos})")
    if f.terminator not in cfg_eos:
        problems.append(f"config.json eos_token_id {cfg_eos or None} lacks it")
    if f.generation is None:
        problems.append("generation_config.json is missing")
    elif f.terminator not in gen_eos:
        problems.append(f"generation_config.json eos_token_id {gen_eos or None} lacks it")
    fix = (
        f"set eos to {f.term} in the tokenizer, config.json and generation_config.json (a list there may keep the "
        "original eos too)"
    )
    if problems:
        return "FAIL", "; ".join(problems) + f" (turn terminator {f.term} = {f.terminator})", fix
    return "PASS", f"tokenizer, config and generation_config all stop on {f.term}", fix


@check("pad vs eos", needs=("tok",))
def pad_is_not_eos(f: Folder) -> Finding:
    tok_eos, cfg_eos, gen_eos = f.eos_ids()
    pad = f.tok.pad_token_id
    if pad is not None and pad in {*gen_eos, *cfg_eos, tok_eos}:
        return (
            "WARN",
            f"pad {f.tok.pad_token} ({pad}) is an eos id: harmless at inference, but training with it masks the "
            "terminator out of the loss in many collators",
            "use a distinct pad token when training (instructify does)",
        )
    return "PASS", f"pad {f.tok.pad_token} ({pad}) is not an eos id", ""


@check("control tokens", needs=("terminator",))
def control_tokens(f: Folder) -> list[Check]:
    """Each control token (ChatML's two, else the terminator) is one special token with a trained-looking row."""
    controls = [template.IM_START, template.IM_END] if f.term == template.IM_END else [f.term]
    checks = []
    for t in controls:
        i = f.tok.convert_tokens_to_ids(t)
        pieces = f.tok(t, add_special_tokens=False)["input_ids"]
        if i is None or i == f.tok.unk_token_id or pieces != [i] or i not in f.special:
            checks.append(
                Check(
                    f"token {t}",
                    "FAIL",
                    f"{t} is not a single special token (tokenises to {pieces})",
                    f"add {t} as a special token and resize the embeddings",
                )
            )
            continue
        rows = sorted((f.rows or {}).items(), key=lambda kw: _layer(kw[0]) == "output")  # input first
        found = [f"{_layer(k)}: {p}" for k, w in rows if (p := template.row_problem(w, i))]
        standing = {_layer(k): template.row_standing(w, i) for k, w in rows}
        faint = [name for name, (_, _, ratio) in standing.items() if ratio < FAINT_NORM]
        status = "FAIL" if found else "WARN" if faint else "PASS"
        if found:
            detail = "; ".join(found)
        elif f.rows:
            detail = f"single special token {i}; " + "; ".join(
                f"{name} row: norm {ratio:.2f}x the median (above {pct:.0f}% of rows), {dist:.2f}x the median "
                "distance from the mean row"
                for name, (pct, dist, ratio) in standing.items()
            )
        else:
            detail = f"single special token {i} (no safetensors weights to inspect)"
        fix = (
            f"the {' and '.join(faint)} row looks hardly trained (a base that has the token but never used it): "
            "train it (template.train_present_rows: true, the default)"
            if faint and not found
            else "initialise the row (mean of rows) and train it (PEFT trainable tokens)"
        )
        checks.append(Check(f"token {t}", status, detail, fix))
    return checks


# A control row under a quarter of the median norm is one training hardly touched (under a tenth: row_problem fails
# it); a norm merely among the smallest is common for rows a fine-tune shifted less than the rest.
FAINT_NORM = 0.25


def _layer(key: str) -> str:
    return "output" if key.endswith("lm_head.weight") else "input"


@check("one BOS", needs=("full_ids",))
def one_bos(f: Folder) -> Finding:
    """Exactly one BOS, first, where the tokenizer adds one (a second comes from render-then-tokenise)."""
    if not template.adds_bos(f.tok):
        return "PASS", "the tokenizer adds no BOS: none expected", ""
    bos = f.tok.bos_token_id
    n_bos = f.full_ids.count(bos)
    if n_bos != 1 or f.full_ids[0] != bos:
        return (
            "FAIL",
            f"rendered conversation has {n_bos} BOS tokens; the model expects 1, first",
            "start the template with {{ bos_token }} once and tokenise with tokenize=True, not render-then-tokenise "
            "with add_special_tokens=True",
        )
    return "PASS", "exactly one BOS, first", ""


def _chat_tokens(f: Folder) -> template.ChatTokens:
    """The tokens instructify's encoder would train this ChatML folder with."""
    return template.ChatTokens(
        f.tok.convert_tokens_to_ids(template.IM_START),
        f.terminator,
        f.tok.pad_token_id,
        f.eos_ids()[2],
        [],
        f.tok.bos_token_id if f.chatml.with_bos else None,
        f.chatml.system_prompt,
    )


@check("train/inference parity", needs=("terminator",))
def encoder_parity(f: Folder) -> Finding:
    """instructify's training tokenisation (template.encode) gives the ids the saved template gives at inference."""
    if f.chatml is None:
        return "SKIP", "the template is not ChatML: instructify's encoder does not train it", ""
    (enc,) = template.encode(f.tok, [PROBE], _chat_tokens(f))
    if enc.input_ids != f.tok.apply_chat_template(PROBE, tokenize=True, return_dict=True)["input_ids"]:
        return (
            "FAIL",
            "training tokenisation differs from apply_chat_template",
            "report this tokenizer: instructify's ChatML encoder disagrees with its template",
        )
    return "PASS", "training tokenisation equals apply_chat_template", ""


@check("assistant mask", needs=("terminator",))
def assistant_mask(f: Folder) -> Finding:
    """Each reply and its terminator are trained, nothing else (from the template's {% generation %} markers, or
    ours for a ChatML template without them)."""
    own = has_generation_markers(f.template)
    markers = f.template if own else (f.chatml.template if f.chatml else None)
    if markers is None:
        return (
            "WARN",
            "template has no {% generation %} markers and is not ChatML",
            "add {% generation %}...{% endgeneration %} around each reply and its terminator",
        )
    out = f.tok.apply_chat_template(
        PROBE, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, chat_template=markers
    )
    spans = template.trained_spans(out["input_ids"], out["assistant_masks"])
    expected = [m["content"] for m in PROBE if m["role"] == "assistant"]
    got = [f.tok.decode(s[:-1]).strip() for s in spans]
    fix = "put {% generation %} around exactly the reply and its terminator"
    if got != expected or not all(s[-1] == f.terminator for s in spans):
        return "FAIL", f"trained spans {got!r} differ from the replies {expected!r} + {f.term}", fix
    note = "" if own else " (template has no markers; instructify trains with ChatML + markers)"
    return "PASS", f"covers the {len(expected)} replies and their {f.term}, nothing else{note}", fix


def _render_tools(f: Folder, messages: list[dict]) -> str:
    return f.tok.apply_chat_template(messages, tools=tools.PROBE_TOOLS, tokenize=False)


def _with_string_arguments(messages: list[dict]) -> list[dict]:
    """The probe with each call's arguments as OpenAI sends them: a JSON string."""
    out = copy.deepcopy(messages)
    for m in out:
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = tools.dumps(call["function"]["arguments"])
    return out


@check("tool calls", needs=("terminator",))
def tool_calls(f: Folder) -> Finding:
    """With tools, the template lists them, closes a call with the terminator, writes OpenAI's JSON-string
    arguments as it writes a dict (no double encoding), keeps the tags plain text, and (ChatML) trains exactly
    the calls and replies, never the tools block or a tool's result, with the ids inference sees."""
    if "tools" not in f.template:
        return "WARN", "the template ignores tools: no tool calling", "use a template that renders tools"
    probe_fn = tools.function_of(tools.PROBE_TOOLS[0])
    try:
        text = _render_tools(f, tools.PROBE)
        prompt = f.tok.apply_chat_template(
            tools.PROBE[:2], tools=tools.PROBE_TOOLS, tokenize=False, add_generation_prompt=True
        )
        call_turn = _render_tools(f, tools.PROBE[:3])
        string_args = _with_string_arguments(tools.PROBE)
        text_str = _render_tools(f, string_args)
    except Exception as e:  # noqa: BLE001 - a template that cannot render tools is the finding
        return (
            "FAIL",
            f"the template does not render a tool conversation: {e}",
            "render tools, tool_calls and tool",
        )
    special_tags = [
        t
        for t in tools.TAGS
        if any(a.content == t and a.special for a in f.tok.added_tokens_decoder.values())
    ]
    if special_tags:
        return (
            "FAIL",
            f"{', '.join(special_tags)} are special tokens: engines drop them before parsing calls",
            "add the tags as plain text or non-special added tokens (special=False)",
        )
    if probe_fn["name"] not in text or probe_fn["description"] not in text:
        return "FAIL", "tools given, but the rendered prompt does not list them", "render each tool's schema"
    call_turn = call_turn[len(prompt) :] if call_turn.startswith(prompt) else call_turn
    closed = re.escape(tools.CALL_OPEN) + ".*" + re.escape(tools.CALL_CLOSE) + r"\s*" + re.escape(f.term)
    if not re.match(r"\s*" + closed, call_turn, re.S):
        return (
            "FAIL",
            f"a tool call is not closed by {f.term}",
            f"end an assistant turn with {f.term} after its last call too, inside {{% generation %}}",
        )
    if text_str != text:
        return (
            "FAIL",
            "arguments given as a JSON string render differently from the same arguments as a dict (encoded twice)",
            "write string arguments verbatim: {% if arguments is string %}{{ arguments }}{% else %}"
            "{{ arguments | tojson }}{% endif %}",
        )
    if f.chatml is None:
        return "PASS", f"tools listed, calls closed by {f.term}, string arguments not encoded twice", ""
    return _tool_training(f, string_args)


def _tool_training(f: Folder, string_args: list[dict]) -> Finding:
    """ChatML: instructify's training ids and mask of the tool probe (both argument forms) equal the template's."""
    system = f.chatml.system_prompt
    encoded = template.encode(
        f.tok,
        [tools.flatten(m, tools.PROBE_TOOLS, system) for m in (tools.PROBE, string_args)],
        _chat_tokens(f),
    )
    want = f.tok.apply_chat_template(tools.PROBE, tools=tools.PROBE_TOOLS, tokenize=True, return_dict=True)
    if any(e.input_ids != want["input_ids"] for e in encoded):
        return (
            "FAIL",
            "training tokenisation of a tool conversation differs from apply_chat_template(tools=...)",
            "render tools as instructify's ChatML template does (instructify/chat/tools.py)",
        )
    spans = template.trained_spans(encoded[0].input_ids, encoded[0].assistant_masks)
    got = [f.tok.decode(s[:-1]) for s in spans]
    expected = [tools.reply_text(m) for m in tools.PROBE if m["role"] == "assistant"]
    if got != expected or not all(s[-1] == f.terminator for s in spans):
        return (
            "FAIL",
            f"trained spans {got!r} differ from the calls and replies {expected!r} + {f.term}",
            "train each call and reply and its terminator, never the tools block or a tool's result",
        )
    return (
        "PASS",
        f"tools listed, calls closed by {f.term} and trained, tool results not; train = inference",
        "",
    )


CHECKS = [
    tokenizer_loads,
    has_template,
    renders,
    prompt_is_prefix,
    has_terminator,
    eos_agrees,
    pad_is_not_eos,
    control_tokens,
    one_bos,
    encoder_parity,
    assistant_mask,
    tool_calls,
]


def diagnose(folder: str | Path) -> list[Check]:
    """Every check's findings on `folder`, in CHECKS order."""
    f = Folder(folder)
    return [c for run in CHECKS for c in run(f)]


def report(checks: list[Check]) -> tuple[str, bool]:
    failed = sum(c.status == "FAIL" for c in checks)
    skipped = sum(c.status == "SKIP" for c in checks)
    lines = [c.line() for c in checks]
    summary = "all checks passed" if not failed else f"{failed} check(s) failed"
    lines.append("doctor: " + summary + (f" ({skipped} skipped)" if skipped else ""))
    return "\n".join(lines), not failed
