"""ChatML template, special tokens, eos/pad and generation_config: the pieces that decide whether a model stops.

The rules (see shared PITFALLS): the turn terminator `<|im_end|>` is eos everywhere (tokenizer, config,
generation_config), pad is never an eos id (else collators mask the terminator out of the loss), the template used
for training is the one saved for inference, and the assistant mask covers each reply *and* its `<|im_end|>`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
EMBEDDING_MULTIPLE = 64  # tensor-core friendly embedding size after adding tokens

# `{% generation %}` marks what the assistant mask covers: the reply and the `<|im_end|>` that closes it, so the
# model is trained to emit the terminator. Newlines are emitted as `{{ '\n' }}` expressions because transformers
# renders with trim_blocks, which would eat a literal newline after a tag.
_CHATML_BODY = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def chatml_template(with_bos: bool, system_prompt: str | None = None) -> str:
    """The ChatML template; `with_bos` for tokenizers whose models expect one BOS (Gemma), not SmolLM2."""
    head = "{{ bos_token }}" if with_bos else ""
    if system_prompt:
        # Injected only when the conversation brings no system message of its own.
        default = system_prompt.replace("\\", "\\\\").replace("'", "\\'")
        head += (
            "{%- if messages[0]['role'] != 'system' -%}"
            f"{{{{ '<|im_start|>system\\n' + '{default}' + '<|im_end|>' + '\\n' }}}}"
            "{%- endif -%}"
        )
    return head + _CHATML_BODY


@dataclass(frozen=True)
class ChatTokens:
    im_start_id: int
    im_end_id: int
    pad_id: int
    eos_ids: list[int]  # generation stops on any of these; im_end first
    new_token_ids: list[int]  # rows added here: they must be trained (PEFT trainable tokens)
    bos_id: int | None = None  # the one BOS the template starts with, None for models without (SmolLM2)
    system_prompt: str | None = None  # injected when a conversation has no system message


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def _init_new_rows(model: PreTrainedModel, old_rows: int) -> None:
    """New rows start at the mean of the existing rows: a neutral start that trains fast (PITFALLS 10)."""
    with torch.no_grad():
        layers = [model.get_input_embeddings()]
        out = model.get_output_embeddings()
        if out is not None and out.weight is not layers[0].weight:
            layers.append(out)
        for layer in layers:
            w = layer.weight
            w[old_rows:] = w[:old_rows].float().mean(0).to(w.dtype)


def add_chat_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, system_prompt: str | None = None
) -> ChatTokens:
    """Give `tokenizer` and `model` ChatML: tokens (added or reused), embeddings, eos, pad, template."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (IM_START, IM_END) if t not in vocab]
    original_eos = model.generation_config.eos_token_id
    original_eos = original_eos if isinstance(original_eos, list) else [original_eos]
    original_eos = [e for e in original_eos if e is not None]
    if tokenizer.eos_token_id is not None:
        original_eos.append(tokenizer.eos_token_id)

    new_tokens = list(missing)
    pad = tokenizer.pad_token
    im_end_existing = vocab.get(IM_END)
    if pad is None or tokenizer.pad_token_id in original_eos or tokenizer.pad_token_id == im_end_existing:
        # pad must differ from every eos id, or the closing token is masked out of the loss (PITFALLS 1)
        pad = tokenizer.unk_token if tokenizer.unk_token_id not in (*original_eos, None) else PAD
        if pad == PAD and PAD not in vocab:
            new_tokens.append(PAD)
    if new_tokens:
        tokenizer.add_special_tokens({"extra_special_tokens": new_tokens}, replace_extra_special_tokens=False)
    tokenizer.pad_token = pad

    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=EMBEDDING_MULTIPLE, mean_resizing=False)
        _init_new_rows(model, old_rows)

    im_start_id, im_end_id = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
    eos_ids = [im_end_id] + [e for e in dict.fromkeys(original_eos) if e != im_end_id]
    with_bos = _adds_bos(tokenizer)
    tokenizer.eos_token = IM_END
    tokenizer.chat_template = chatml_template(with_bos, system_prompt)
    set_stop_ids(model, eos_ids, tokenizer.pad_token_id)
    new_ids = tokenizer.convert_tokens_to_ids(list(missing))
    bos_id = tokenizer.bos_token_id if with_bos else None
    return ChatTokens(im_start_id, im_end_id, tokenizer.pad_token_id, eos_ids, list(new_ids), bos_id, system_prompt)


def set_stop_ids(model: PreTrainedModel, eos_ids: list[int], pad_id: int) -> None:
    """config and generation_config agree: pipeline(), generate() and vLLM each read one of them (PITFALLS 3)."""
    text_config = model.config.get_text_config()
    text_config.eos_token_id = eos_ids[0]
    text_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = list(eos_ids)
    model.generation_config.pad_token_id = pad_id


def assistant_mask(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, mask) exactly as SFTTrainer tokenises a conversation; mask=1 on trained tokens."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["input_ids"]), list(out["assistant_masks"])



@dataclass
class Encoded:
    input_ids: list[int]
    assistant_masks: list[int]  # 1 on trained tokens: each reply and the <|im_end|> that closes it
    ends: list[int]  # token count after each message: the turn boundaries a long conversation may be cut at


def with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def encode(tokenizer: PreTrainedTokenizerBase, conversations: list[list[dict]], tokens: ChatTokens) -> list[Encoded]:
    """Tokenise conversations exactly as the ChatML template renders them, with the loss mask set where tokens are
    added. Message text is tokenised with `split_special_tokens`, so text like "<|im_end|>" typed inside a message
    stays plain text and never becomes a control token (PITFALLS 15); tests and `doctor` check the ids and mask equal
    `apply_chat_template(..., return_assistant_tokens_mask=True)` on ordinary conversations.

    Our own instead of `apply_chat_template`: that renders to text and re-tokenises, which turns such text into
    control tokens, and it renders one conversation per call; this is one batched tokenizer call.
    """
    full = [with_system(c, tokens.system_prompt) for c in conversations]
    # "role\ncontent" between <|im_start|> and <|im_end|>: the same text pieces the rendered template splits into
    pieces = [f"{m['role']}\n{m['content']}" for c in full for m in c]
    enc = tokenizer(pieces, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    out, k = [], 0
    for conv, original in zip(full, conversations):
        ids = [] if tokens.bos_id is None else [tokens.bos_id]
        mask = [0] * len(ids)
        ends = []
        for m in conv:
            trained = m["role"] == "assistant"
            header = len(m["role"]) + 1  # chars of "role\n": never trained
            ids.append(tokens.im_start_id)
            mask.append(0)
            for tid, (start, _) in zip(enc["input_ids"][k], enc["offset_mapping"][k]):
                ids.append(tid)
                mask.append(int(trained and start >= header))
            ids.append(tokens.im_end_id)  # the terminator: trained after a reply, so the model learns to stop
            mask.append(int(trained))
            ids += newline
            mask += [0] * len(newline)
            ends.append(len(ids))
            k += 1
        if conv is not original:
            ends = ends[1:]  # the injected system message is not one of the caller's messages
        out.append(Encoded(ids, mask, ends))
    return out


def special_texts(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """Every special token's text: inside a message it would become a control token if rendered and re-tokenised."""
    return tuple(sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special} | {IM_START, IM_END}))
