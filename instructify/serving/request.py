"""A parsed chat completion request -> the settings of its engine job, by the training data's rules; a RequestError
names the field that is wrong and what to send instead."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from instructify.chat import template
from instructify.chat import tools as chat_tools
from instructify.data.validate import check_messages, check_tool_use
from instructify.serving import tool_replies
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
    tools: bool = False  # the reply may hold calls: parsed into tool_calls
    prefix: str = ""  # the reply's start, written into the prompt (tool_choice required or named)
    matcher: object = None  # the reply's tool-call grammar (instructify/evals/tool_grammar.py), or None


def check_request_messages(
    messages: object, forbidden: tuple[str, ...], tools: list[dict] | None = None
) -> list[dict]:
    """The training data's rules (instructify/data/: check_messages, the same code), the last message the user's
    (or a tool's result); content given as a list of text parts is joined first. With tools, calls and results
    follow the rules of tool use and the conversation as the template flattens it the rest. A broken rule is a
    400 naming the message and field."""
    if isinstance(messages, list):
        messages = [
            {**m, "content": _text_of_parts(m["content"], f"messages[{i}].content")}
            if isinstance(m, dict) and isinstance(m.get("content"), list)
            else m
            for i, m in enumerate(messages)
        ]
    if not chat_tools.uses_tools(messages, tools):
        _raise(check_messages(messages, forbidden, prompt=True))
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    _raise(check_tool_use(messages, tools or [], schema=False))
    found = check_messages(chat_tools.flatten(messages, tools), forbidden, prompt=True)
    if found is not None:  # its index counts the flattened turns: the tools' system turn, results grouped
        raise RequestError(f"messages: {found}", "messages")
    return [_tool_message(m) for m in messages]


def _raise(found) -> None:
    if found is None:
        return
    if found.index is None:
        raise RequestError(found.reason, "messages")
    where = f"messages[{found.index}]"
    raise RequestError(f"{where} {found.reason}", f"{where}.{found.field}" if found.field else where)


def _tool_message(m: dict) -> dict:
    out = {k: m[k] for k in ("role", "content", "tool_call_id", "name") if m.get(k) is not None}
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {
                **c,
                "function": {
                    **c["function"],
                    "arguments": tool_replies.arguments_json(c["function"]["arguments"]),
                },
            }
            for c in m["tool_calls"]
        ]
    return out


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
    grammars=None,
) -> Settings:
    """The checked settings of one request; RequestError names the field that is wrong. `grammars`
    (instructify/evals/tool_grammar.py Grammars): the reply's calls are held to the offered schemas."""
    for name, (fine, why) in UNSUPPORTED.items():
        if not fine(getattr(request, name)):
            raise RequestError(f"{name}: {why}", name)
    tools = [t.model_dump(exclude_none=True) for t in request.tools or []]
    try:
        named = request.tool_choice
        choice = tool_replies.choice_of(named.model_dump() if hasattr(named, "model_dump") else named, tools)
    except tool_replies.ToolChoiceError as e:
        raise RequestError(str(e), "tool_choice") from None
    messages = check_request_messages([m.model_dump() for m in request.messages], forbidden, tools)
    shown = tools if choice not in (None, "none") else None  # none: the tools are left out of the prompt
    prefix, continuation = tool_replies.prefix_of(choice)
    key = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    max_tokens = getattr(request, key) or DEFAULT_MAX_TOKENS
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if "" in stop:
        raise RequestError("stop: a stop string must not be empty", "stop")
    with TOKENIZER_LOCK:
        prompt_ids = tokenizer.apply_chat_template(
            messages, tools=shown, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        start, prefix = template.prefill(tokenizer, prefix, continuation) if prefix else ([], "")
    prompt_ids = prompt_ids + start
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
        tools=shown is not None,
        prefix=prefix,
        matcher=(
            grammars.matcher(shown, choice, prefix, request.parallel_tool_calls is not False)
            if grammars is not None and shown
            else None
        ),
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
