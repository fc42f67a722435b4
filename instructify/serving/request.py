"""A parsed chat completion request -> the settings of its engine job, by the training data's rules; a RequestError
names the field that is wrong and what to send instead."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from instructify.data.validate import check_messages
from instructify.serving.engine import TOKENIZER_LOCK
from instructify.serving.schema import ChatCompletionRequest

DEFAULT_MAX_TOKENS = 256


class RequestError(ValueError):
    """A bad request: answered with `status` and an OpenAI-style error naming `param`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


@dataclass(frozen=True)
class Settings:
    """What the engine needs to answer one request, and how to answer it."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: tuple  # (do_sample, temperature, top_p)
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def check_request_messages(messages: object, forbidden: tuple[str, ...]) -> list[dict]:
    """The training data's rules (instructify/data/: check_messages, the same code), the last message the user's;
    content given as a list of text parts is joined first. A broken rule is a 400 naming the message and field."""
    if isinstance(messages, list):
        messages = [
            {**m, "content": _text_of_parts(m["content"], f"messages[{i}].content")}
            if isinstance(m, dict) and isinstance(m.get("content"), list)
            else m
            for i, m in enumerate(messages)
        ]
    found = check_messages(messages, forbidden, prompt=True)
    if found is not None:
        if found.index is None:
            raise RequestError(found.reason, "messages")
        where = f"messages[{found.index}]"
        raise RequestError(f"{where} {found.reason}", f"{where}.{found.field}" if found.field else where)
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _text_of_parts(parts: list, where: str) -> str:
    """OpenAI's content parts, as many clients send them: text parts are joined by newlines (as vLLM does);
    any other part (image_url, input_audio, file) is refused by name, since the model reads text only."""
    texts = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(kind, str) and kind != "text":
            raise RequestError(
                f"{where}[{j}] is a {kind!r} part; this model reads text only: send text parts", where
            )
        else:
            raise RequestError(f"{where}[{j}] must be {{'type': 'text', 'text': '...'}}", where)
    return "\n".join(texts)


# Fields that would change the answer in ways this server does not do: refused unless at their default (OpenAI's
# own server answers 400 to what it cannot do, too).
UNSUPPORTED = {
    "tools": (lambda v: not v, "tool calling is not served yet; send no tools"),
    "tool_choice": (lambda v: v in (None, "none"), "tool calling is not served yet"),
    "response_format": (
        lambda v: not v or v.get("type") == "text",
        "only text replies: send {'type': 'text'}",
    ),
    "logprobs": (lambda v: not v, "log probabilities are not returned"),
    "top_logprobs": (lambda v: v is None, "log probabilities are not returned"),
    "logit_bias": (lambda v: not v, "not supported; leave it empty"),
    "presence_penalty": (lambda v: not v, "not supported; leave it 0"),
    "frequency_penalty": (lambda v: not v, "not supported; leave it 0"),
}


def settings_of(
    request: ChatCompletionRequest,
    tokenizer: PreTrainedTokenizerBase,
    forbidden: tuple[str, ...],
    defaults: dict,
) -> Settings:
    """The checked settings of one request; RequestError names the field that is wrong."""
    for name, (fine, why) in UNSUPPORTED.items():
        if not fine(getattr(request, name)):
            raise RequestError(f"{name}: {why}", name)
    messages = check_request_messages([m.model_dump() for m in request.messages], forbidden)
    key = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    max_tokens = getattr(request, key) or DEFAULT_MAX_TOKENS
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if "" in stop:
        raise RequestError("stop: a stop string must not be empty", "stop")
    with TOKENIZER_LOCK:
        prompt_ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    if len(prompt_ids) + max_tokens > defaults["context"]:
        raise RequestError(
            f"the conversation is {len(prompt_ids)} tokens; with {key}={max_tokens} it exceeds the model's "
            f"{defaults['context']}-token context",
            "messages",
        )
    temperature = defaults["temperature"] if request.temperature is None else request.temperature
    top_p = defaults["top_p"] if request.top_p is None else request.top_p
    do_sample = temperature > 0
    return Settings(
        prompt_ids=prompt_ids,
        max_tokens=max_tokens,
        sampling=(do_sample, float(temperature) if do_sample else 1.0, float(top_p) if do_sample else 1.0),
        seed=request.seed,
        stop=stop,
        stream=bool(request.stream),
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
    )


def model_defaults(model) -> dict:
    """The model's own sampling choice (its generation_config) and context length: what a request that says
    nothing gets."""
    g = model.generation_config
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 8192
    return {
        "temperature": (g.temperature or 1.0) if g.do_sample else 0.0,
        "top_p": g.top_p or 1.0,
        "context": context,
    }
