"""ChatML template, special tokens, eos/pad and generation_config: the pieces that decide whether a model stops.

The rules: the turn terminator `<|im_end|>` is eos everywhere (tokenizer, config,
generation_config), pad is never an eos id (else collators mask the terminator out of the loss), the template used
for training is the one saved for inference, and the assistant mask covers each reply *and* its `<|im_end|>`.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from tokenizers import pre_tokenizers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructify.chat import tools
from instructify.config import TemplateConfig

log = logging.getLogger(__name__)

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
EMBEDDING_MULTIPLE = 64  # tensor-core friendly embedding size after adding tokens


# `{% generation %}` marks what the assistant mask covers: the reply, its tool calls and the `<|im_end|>` that closes
# it, so the model is trained to emit the terminator (after a call too: PITFALLS 26), never the tools block or a
# tool's result. Tools follow Hermes / Qwen2.5 (instructify/chat/tools.py, whose `flatten` renders the same text);
# arguments are written verbatim when they are OpenAI's JSON string, as JSON when a dict (no double encoding).
# Newlines are emitted as `{{ '\n' }}` expressions because transformers renders with trim_blocks, which would eat a
# literal newline after a tag.
def _tools_block(default: str) -> str:
    head, tail = (_quote(t) for t in (tools.TOOLS_HEAD, tools.TOOLS_TAIL))
    return (
        "{%- if tools -%}"
        "{{ '<|im_start|>system\\n' }}"
        "{%- if messages[0]['role'] == 'system' -%}{{ messages[0]['content'] + '\\n\\n' }}"
        + (f"{{%- else -%}}{{{{ '{default}\\n\\n' }}}}" if default else "")
        + "{%- endif -%}"
        f"{{{{ '{head}' }}}}"
        "{%- for tool in tools -%}{{ '\\n' + (tool | tojson) }}{%- endfor -%}"
        f"{{{{ '{tail}' + '<|im_end|>' + '\\n' }}}}"
    )


_CHATML_BODY = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}"
    "{%- if message['content'] -%}{{ message['content'] }}{%- endif -%}"
    "{%- for call in message['tool_calls'] or [] -%}"
    "{%- if call['function'] is defined -%}{%- set call = call['function'] -%}{%- endif -%}"
    "{%- if not loop.first or message['content'] -%}{{ '\\n' }}{%- endif -%}"
    "{{ '<tool_call>\\n{\"name\": \"' + call['name'] + '\", \"arguments\": ' }}"
    "{%- if call['arguments'] is string -%}{{ call['arguments'] }}{%- else -%}{{ call['arguments'] | tojson }}"
    "{%- endif -%}"
    "{{ '}\\n</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>' }}"
    "{%- endgeneration -%}"
    "{{ '\\n' }}"
    "{%- elif message['role'] == 'tool' -%}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}{{ '<|im_start|>user' }}{%- endif -%}"
    "{{ '\\n<tool_response>\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}{{ message['content'] | tojson }}"
    "{%- endif -%}"
    "{{ '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}{{ '<|im_end|>' + '\\n' }}{%- endif -%}"
    "{%- elif not (loop.first and tools and message['role'] == 'system') -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def _quote(text: str) -> str:
    """`text` as the inside of a single-quoted Jinja string."""
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def chatml_template(with_bos: bool, system_prompt: str | None = None) -> str:
    """The ChatML template; `with_bos` for tokenizers whose models expect one BOS (Gemma), not SmolLM2."""
    head = "{{ bos_token }}" if with_bos else ""
    default = _quote(system_prompt) if system_prompt else ""
    head += _tools_block(default)
    if system_prompt:
        # Injected only when the conversation brings no system message of its own.
        head += (
            "{%- elif messages[0]['role'] != 'system' -%}"
            f"{{{{ '<|im_start|>system\\n' + '{default}' + '<|im_end|>' + '\\n' }}}}"
        )
    return head + "{%- endif -%}" + _CHATML_BODY


@dataclass(frozen=True)
class ChatTokens:
    im_start_id: int
    im_end_id: int
    pad_id: int
    eos_ids: list[int]  # generation stops on any of these; im_end first
    new_token_ids: list[
        int
    ]  # rows that train (PEFT trainable tokens): added, re-initialised, or present ChatML
    bos_id: int | None = None  # the one BOS the template starts with, None for models without (SmolLM2)
    system_prompt: str | None = None  # injected when a conversation has no system message


# What a new token's row starts as with `template.init: description`: the mean embedding of these words' tokens.
DESCRIPTIONS = {IM_START: "start of turn", IM_END: "end of turn"}

# Probe conversations for template equivalence and `doctor`: system, three turns, generation prompt.
PROBE = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hi there"},
    {"role": "assistant", "content": "hello friend"},
    {"role": "user", "content": "how was the lake"},
    {"role": "assistant", "content": "cold but fun"},
    {"role": "user", "content": "nice"},
    {"role": "assistant", "content": "see you soon"},
]


class TemplateError(ValueError):
    """A template or token setup instructify cannot train with; the message says what to use instead."""


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer starts a text with BOS (Gemma does, SmolLM2 not): its template then writes one."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def row_problem(weight: torch.Tensor, i: int) -> str | None:
    """Why embedding row `i` looks untrained (near-zero norm, identical to other rows, or still the mean of all
    rows it was started at), or None."""
    if i >= weight.shape[0]:
        return f"id {i} is past the {weight.shape[0]} embedding rows"
    weight = weight.detach().float()
    norms = weight.norm(dim=1)
    if norms[i] < 0.1 * norms.median():
        return f"row {i} is near zero (norm {norms[i]:.3g}, median {norms.median():.3g})"
    if int((weight == weight[i]).all(dim=1).sum()) > 1:
        return f"row {i} is identical to other rows (an untrained initialisation)"
    if row_standing(weight, i)[1] < 1e-3:
        return f"row {i} is the mean of all rows (where a new row starts): it never trained"
    return None


def row_standing(weight: torch.Tensor, i: int) -> tuple[float, float, float]:
    """Row `i` against the others: the percentile of its norm, its distance from the mean row over the median
    row's (a trained row sits near 1; a row that was started at the mean and never trained, at 0), and its norm
    over the median norm."""
    weight = weight.detach().float()
    norms = weight.norm(dim=1)
    distance = (weight - weight.mean(0)).norm(dim=1)
    percentile = 100.0 * float((norms < norms[i]).float().mean())
    ratio = float(norms[i] / norms.median().clamp_min(1e-12))
    return percentile, float(distance[i] / distance.median().clamp_min(1e-12)), ratio


def embedding_layers(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The input embedding, and the output layer when it is its own matrix (untied): where token rows live."""
    layers = [model.get_input_embeddings()]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not layers[0].weight:
        layers.append(out)  # untied: the output rows need the same start
    return layers


def init_rows(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ids: list[int], old_rows: int, init: str
) -> None:
    """Start rows `ids` (and any padding rows past `old_rows`) at the mean of the existing rows, or for
    `init="description"` at the mean of the rows of a description's tokens ("end of turn"): a neutral start that
    trains fast. Never random or zero: a random row makes the new token's logit noise, a zero row keeps it from
    ever being predicted, and either way the model learns to stop slowly if at all."""
    with torch.no_grad():
        for layer in embedding_layers(model):
            w = layer.weight
            mean = w[:old_rows].float().mean(0)
            w[old_rows:] = mean.to(w.dtype)
            for i in ids:
                text = DESCRIPTIONS.get(tokenizer.convert_ids_to_tokens(i)) if init == "description" else None
                src = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
                w[i] = (w[src].float().mean(0) if src else mean).to(w.dtype)


def default_system(tok: PreTrainedTokenizerBase, candidate: str) -> str | None:
    """The system message a ChatML template injects when a conversation has none (SmolLM2-Instruct does)."""
    text = tok.apply_chat_template(PROBE[1:2], tokenize=False, chat_template=candidate)
    head = text.split(IM_START + "user", 1)[0]
    prefix = IM_START + "system\n"
    if prefix in head and head.rstrip().endswith(IM_END):
        return head.split(prefix, 1)[1].rsplit(IM_END, 1)[0]
    return None


class ChatmlMatch(NamedTuple):
    template: str  # our ChatML template, with {% generation %} markers
    with_bos: bool  # it starts with {{ bos_token }}
    system_prompt: str | None  # the system message it injects when a conversation has none


def chatml_equivalent(tok: PreTrainedTokenizerBase, candidate: str | None = None) -> ChatmlMatch | None:
    """Our ChatML template (with {% generation %} markers) that renders exactly like `candidate` (default: `tok`'s
    own template), its BOS and default system prompt included, on probe conversations; else None.
    This is how a user's ChatML template without markers gets them."""
    candidate = candidate or tok.chat_template
    if not candidate:
        return None
    try:
        system = default_system(tok, candidate)
        for with_bos in (True, False):
            ours = chatml_template(with_bos, system)
            if all(
                tok.apply_chat_template(
                    PROBE[a:b], tokenize=False, add_generation_prompt=g, chat_template=candidate
                )
                == tok.apply_chat_template(
                    PROBE[a:b], tokenize=False, add_generation_prompt=g, chat_template=ours
                )
                for a, b, g in ((0, 7, False), (1, 4, True), (1, 6, True))
            ):
                return ChatmlMatch(ours, with_bos, system)
    except Exception:  # noqa: BLE001 - a template that fails to render is simply not equivalent
        return None
    return None


@dataclass(frozen=True)
class TokenChoice:
    missing: list[str]  # ChatML tokens the vocabulary lacks: appended, their rows trained
    untrained: list[int]  # ChatML tokens present with untrained-looking rows: re-initialised and trained
    pad: str  # the pad token, never an eos id
    add_pad: bool  # `pad` is our <|pad|>, appended too


def choose_tokens(
    tokenizer: PreTrainedTokenizerBase, weight: torch.Tensor | None, eos: list[int]
) -> TokenChoice:
    """Which ChatML tokens to add or re-train (`weight`: the input embedding, None to judge no rows) and which pad
    to use. Pad must differ from every eos id (`eos`, the base's) and from <|im_end|>: collators that mask pad out of
    the labels would mask the closing token too, and the model would never learn to stop."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (IM_START, IM_END) if t not in vocab]
    untrained = []
    for t in (IM_START, IM_END):
        if weight is not None and t in vocab and (problem := row_problem(weight, vocab[t])):
            untrained.append(vocab[t])
            log.warning(
                "%s is in the vocabulary but looks untrained (%s): re-initialising and training it",
                t,
                problem,
            )
    pad = tokenizer.pad_token
    if pad is None or tokenizer.pad_token_id in eos or tokenizer.pad_token_id == vocab.get(IM_END):
        pad = tokenizer.unk_token if tokenizer.unk_token_id not in (*eos, None) else PAD
    return TokenChoice(missing, untrained, pad, pad == PAD and PAD not in vocab)


def apply_rows(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, trainable: list[int], init: str
) -> None:
    """Grow the embeddings to the tokenizer (padded to EMBEDDING_MULTIPLE rows) and start the new rows and
    `trainable` ones as `init` says (init_rows)."""
    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(
            len(tokenizer), pad_to_multiple_of=EMBEDDING_MULTIPLE, mean_resizing=False
        )
    if trainable or len(tokenizer) > old_rows:
        init_rows(model, tokenizer, trainable, old_rows, init)


def choose_template(
    tokenizer: PreTrainedTokenizerBase, source: str, system_prompt: str | None = None
) -> ChatmlMatch:
    """Our ChatML template for `source`: chatml, model (the tokenizer's own), or a .jinja path; the latter two must
    render as ChatML and lend it their BOS and default system prompt (a `system_prompt` given here wins)."""
    if source == "chatml":
        with_bos = adds_bos(tokenizer)
        return ChatmlMatch(chatml_template(with_bos, system_prompt), with_bos, system_prompt)
    candidate = tokenizer.chat_template if source == "model" else Path(source).read_text()
    found = chatml_equivalent(tokenizer, candidate)
    if found is None:
        what = "the model has no chat template" if not candidate else "it does not render as ChatML"
        raise TemplateError(
            f"template.name={source}: {what}; instructify trains ChatML (<|im_start|>role\\n"
            "content<|im_end|>): use template.name: chatml"
        )
    system_prompt = system_prompt or found.system_prompt
    return ChatmlMatch(chatml_template(found.with_bos, system_prompt), found.with_bos, system_prompt)


def _base_eos(model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The base's stop ids (generation_config's, then the tokenizer's): kept as eos after <|im_end|>."""
    ids = model.generation_config.eos_token_id if model is not None else None
    ids = [e for e in (ids if isinstance(ids, list) else [ids]) if e is not None]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def add_chat_tokens(
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    system_prompt: str | None = None,
    source: str = "chatml",
    init: str = "mean",
    train_present: bool = True,
) -> ChatTokens:
    """Give `tokenizer` and `model` ChatML: tokens (choose_tokens), embedding rows (apply_rows), eos, pad, and the
    template (choose_template). `model=None` sets up the tokenizer only (inspect, prepare): the token ids are the
    same, since tokens are appended in a fixed order. `train_present`: ChatML rows the base already has train
    too, kept as they are (a Qwen base's <|im_end|> is in its vocabulary, but its base training hardly saw it)."""
    base_eos = _base_eos(model, tokenizer)
    choice = choose_tokens(
        tokenizer, model.get_input_embeddings().weight if model is not None else None, base_eos
    )
    added = choice.missing + ([PAD] if choice.add_pad else [])
    if added:
        tokenizer.add_special_tokens({"extra_special_tokens": added}, replace_extra_special_tokens=False)
    tokenizer.pad_token = choice.pad
    reinit = choice.untrained + tokenizer.convert_tokens_to_ids(choice.missing)
    if model is not None:
        apply_rows(model, tokenizer, reinit, init)
    present = [i for i in tokenizer.convert_tokens_to_ids([IM_START, IM_END]) if i not in reinit]
    trainable = reinit + (present if train_present else [])

    im_start_id, im_end_id = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
    eos_ids = [im_end_id] + [e for e in dict.fromkeys(base_eos) if e != im_end_id]
    tokenizer.eos_token = IM_END
    chosen = choose_template(tokenizer, source, system_prompt)
    tokenizer.chat_template = chosen.template
    if model is not None:
        set_stop_ids(model, eos_ids, tokenizer.pad_token_id)
    bos_id = tokenizer.bos_token_id if chosen.with_bos else None
    return ChatTokens(
        im_start_id, im_end_id, tokenizer.pad_token_id, eos_ids, trainable, bos_id, chosen.system_prompt
    )


def add_chat_tokens_from(cfg: TemplateConfig, model: PreTrainedModel | None, tokenizer) -> ChatTokens:
    """`add_chat_tokens` with the run config's template settings: the one place they are unpacked."""
    return add_chat_tokens(model, tokenizer, cfg.system_prompt, cfg.name, cfg.init, cfg.train_present_rows)


def set_stop_ids(model: PreTrainedModel, eos_ids: list[int], pad_id: int) -> None:
    """config and generation_config agree: pipeline(), generate() and vLLM each read one of them, and a runtime that
    reads a stale one never stops."""
    text_config = model.config.get_text_config()
    text_config.eos_token_id = eos_ids[0]
    text_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = list(eos_ids)
    model.generation_config.pad_token_id = pad_id


def set_sampling(model: PreTrainedModel, temperature: float, top_p: float) -> None:
    """generation_config's decoding default: greedy at temperature 0, else sampling (what a plain generate(),
    pipeline() or vLLM then does unless told otherwise)."""
    gen = model.generation_config
    gen.do_sample = temperature > 0
    gen.temperature = temperature if temperature > 0 else None
    gen.top_p = top_p if temperature > 0 and top_p < 1 else None


def trained_spans(ids: list[int], mask: list[int]) -> list[list[int]]:
    """The runs of consecutive trained tokens: one per assistant reply, each ending on its terminator."""
    spans, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            spans.append(current)
            current = []
    return spans + ([current] if current else [])


@dataclass
class Encoded:
    input_ids: list[int]
    assistant_masks: list[int]  # 1 on trained tokens: each reply and the <|im_end|> that closes it
    ends: list[int]  # token count after each message: the turn boundaries a long conversation may be cut at


def with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def encode(
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict]],
    tokens: ChatTokens,
    max_length: int | None = None,
) -> list[Encoded]:
    """Tokenise conversations exactly as the ChatML template renders them, with the loss mask set where tokens are
    added. Message text is tokenised with `split_special_tokens`, so text like "<|im_end|>" typed inside a message
    stays plain text and never becomes a control token (a typed "<|im_end|>" would otherwise end the turn); tests and `doctor` check the ids and mask equal
    `apply_chat_template(..., return_assistant_tokens_mask=True)` on ordinary conversations.

    Our own instead of `apply_chat_template`: that renders to text and re-tokenises, which turns such text into
    control tokens, and it renders one conversation per call; this is batched tokenizer calls.

    With `max_length`, a conversation is tokenised only as far as needed to see it crosses `max_length`: its
    `ends` then stop at the first message past it (long chat logs are mostly never trained on in full).
    """
    if not conversations:
        return []
    full = [with_system(c, tokens.system_prompt) for c in conversations]
    # first pass: messages up to ~8 characters per allowed token (a token averages ~4); the rest only if needed
    take = [len(c) if max_length is None else _prefix_by_chars(c, 8 * max_length) for c in full]
    pieces = _tokenize(tokenizer, [_piece(m) for c, n in zip(full, take) for m in c[:n]])
    parts, k = [], 0
    for n in take:
        parts.append(pieces[k : k + n])
        k += n
    encoded = [_assemble(c, p, tokens, tokenizer) for c, p in zip(full, parts)]
    if max_length is not None:
        more = [
            i for i, (c, e) in enumerate(zip(full, encoded)) if e.ends[-1] <= max_length and take[i] < len(c)
        ]
        if more:
            rest = _tokenize(tokenizer, [_piece(m) for i in more for m in full[i][take[i] :]])
            k = 0
            for i in more:
                n = len(full[i]) - take[i]
                parts[i] += rest[k : k + n]
                k += n
                encoded[i] = _assemble(full[i], parts[i], tokens, tokenizer)
    for i, (conv, original) in enumerate(zip(full, conversations)):
        if conv is not original:
            encoded[i].ends = encoded[i].ends[1:]  # the injected system message is not one of the caller's
    return encoded


def _piece(message: dict) -> str:
    # "role\ncontent" between <|im_start|> and <|im_end|>: the text pieces the rendered template splits into
    return f"{message['role']}\n{message['content']}"


def _prefix_by_chars(conv: list[dict], chars: int) -> int:
    total = 0
    for i, m in enumerate(conv):
        total += len(m["content"])
        if total > chars:
            return i + 1
    return len(conv)


def _assemble(
    conv: list[dict], parts: list[tuple[list[int], list[int]]], tokens: ChatTokens, tokenizer
) -> Encoded:
    """The ids and mask of `conv`'s first len(parts) messages; mask=1 on each reply and its <|im_end|>."""
    newline = list(_newline(tokenizer))
    ids = [] if tokens.bos_id is None else [tokens.bos_id]
    mask = [0] * len(ids)
    ends = []
    for m, (tids, starts) in zip(conv, parts):
        ids.append(tokens.im_start_id)
        ids += tids
        ids.append(tokens.im_end_id)  # the terminator: trained after a reply, so the model learns to stop
        ids += newline
        if m["role"] == "assistant":
            header = bisect.bisect_left(starts, len("assistant\n"))  # "assistant\n" itself is never trained
            mask += [0] * (1 + header) + [1] * (len(tids) - header + 1) + [0] * len(newline)
        else:
            mask += [0] * (len(tids) + 2 + len(newline))
        ends.append(len(ids))
    return Encoded(ids, mask, ends)


@functools.lru_cache(maxsize=8)
def _newline(tokenizer) -> tuple[int, ...]:
    return tuple(_tokenize(tokenizer, ["\n"])[0][0])  # as it follows <|im_end|>, not as a text's start


def _metaspaces(pre) -> list:
    """The Metaspace steps of a pre-tokenizer (alone or in a Sequence): SentencePiece's '▁' prefix lives there."""
    if isinstance(pre, pre_tokenizers.Metaspace):
        return [pre]
    found, i = [], 0
    while isinstance(pre, pre_tokenizers.Sequence):  # no len(): index until IndexError
        try:
            found += _metaspaces(pre[i])
        except IndexError:
            break
        i += 1
    return found


@contextlib.contextmanager
def _mid_text(backend):
    """Tokenise each piece as it stands in the rendered conversation, after a control token, not as a text's
    start: a SentencePiece tokenizer whose '▁' prefix goes on the first word only (Metaspace "first", the
    transformers 5 default for Llama 2, Mistral, Phi-3) would otherwise give "▁user" where inference has "user".
    Special-token text in a message stays plain text (encode_special_tokens)."""
    first = [m for m in _metaspaces(backend.pre_tokenizer) if m.prepend_scheme == "first"]
    previous = backend.encode_special_tokens
    backend.encode_special_tokens = True
    for m in first:
        m.prepend_scheme = "never"
    try:
        yield backend
    finally:
        backend.encode_special_tokens = previous
        for m in first:
            m.prepend_scheme = "first"


def _tokenize(tokenizer: PreTrainedTokenizerBase, pieces: list[str]) -> list[tuple[list[int], list[int]]]:
    """(ids, start offsets) per piece, special-token text split as plain text; straight through the Rust tokenizer
    when there is one (transformers' wrapper costs more than the tokenisation itself here)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_special_tokens"):
        enc = tokenizer(
            pieces, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True
        )
        return [(ids, [s for s, _ in offs]) for ids, offs in zip(enc["input_ids"], enc["offset_mapping"])]
    with _mid_text(backend):
        encodings = backend.encode_batch(pieces, add_special_tokens=False)
    return [(e.ids, [s for s, _ in e.offsets]) for e in encodings]


def prefill(tokenizer: PreTrainedTokenizerBase, text: str, continuation: str) -> tuple[list[int], str]:
    """The ids to start a reply with so that it begins with `text`, as training tokenised such a reply: `text`
    followed by a typical `continuation`, tokenised as a reply is (after "assistant\\n"), and only the tokens
    that end within `text` kept; the rest of `text` is left for the model to write, since a token that `text`
    cuts in two would be one the model never saw there. Returns (ids, the text they spell)."""
    header = "assistant\n"
    ids, starts = _tokenize(tokenizer, [header + text + continuation])[0]
    ends = starts[1:] + [len(header + text + continuation)]
    keep = [k for k, (s, e) in enumerate(zip(starts, ends)) if s >= len(header) and e <= len(header + text)]
    if not keep:
        return [], ""
    return [ids[k] for k in keep], (header + text)[starts[keep[0]] : ends[keep[-1]]]


def special_texts(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """Every special token's text: inside a message it would become a control token if rendered and re-tokenised."""
    return tuple(
        sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special} | {IM_START, IM_END})
    )
