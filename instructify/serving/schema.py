"""The OpenAI chat-completions shapes we serve, as pydantic models: what /openapi.json publishes and requests are
parsed with. Types only; the conversation rules (roles, order, special-token text) are the training data's, applied
by instructify/serving/request.py, and the fields we refuse are refused there by name."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

MAX_TOKENS_LIMIT = 4096  # per request; the model's context may allow fewer
MAX_STOP = 4  # stop strings per request, as OpenAI allows

# Strict: a string "10" is not max_tokens 10 and 1 is not `true` (OpenAI refuses both; schemathesis checks that
# what the schema excludes is refused). Unknown fields are ignored, as OpenAI's server does for most of them.
_STRICT = ConfigDict(strict=True, extra="ignore")

_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
}
_TEXT = {"type": "string", "pattern": r"\S"}  # not empty or whitespace only
# What a message's content may be. Validated by the training data's rules (check_messages) rather than here, so a
# request and a training row are refused for the same reasons with the same words.
Content = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [_TEXT, {"type": "array", "items": _TEXT_PART, "minItems": 1}, {"type": "null"}],
            "description": "text, or text parts (joined by newlines); other parts are refused; null only for an "
            "assistant message with tool_calls",
        }
    ),
]


# The roles a message may have; like its content, checked by the training data's rules.
Role = Annotated[str, WithJsonSchema({"enum": ["system", "user", "assistant", "tool"], "type": "string"})]


class FunctionCall(BaseModel):
    name: str
    arguments: str | dict = Field(description="a JSON object, as OpenAI's JSON string or as an object")


class ToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role = Field(
        description="system (first only), then user and assistant alternating, tool results after the "
        "assistant's calls; the last is user or tool"
    )
    content: Content = None
    tool_calls: list[ToolCall] | None = Field(None, description="an assistant message's calls")
    tool_call_id: str | None = Field(None, description="the call a tool message answers")
    name: str | None = None


class FunctionSchema(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict | None = Field(None, description="a JSON schema of the arguments object")


class Tool(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: FunctionSchema


class NamedChoice(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: dict = Field(description='{"name": ...}: one of the tools')


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool | None = Field(None, description="a last chunk with usage and no choices")


class ChatCompletionRequest(BaseModel):
    model_config = _STRICT
    messages: list[Message] = Field(
        min_length=1, description="the conversation so far; the model answers its last message"
    )
    model: str | None = Field(None, description="accepted and ignored: one model is served")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT, description="default 256")
    max_completion_tokens: int | None = Field(
        None, ge=1, le=MAX_TOKENS_LIMIT, description="wins over max_tokens"
    )
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy; default: the model's")
    top_p: float | None = Field(None, gt=0, le=1, description="default: the model's")
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = Field(
        None, description="up to 4 strings that end the reply (not included); <|im_end|> always does"
    )
    seed: int | None = Field(None, description="the same seed gives the same sampled reply")
    stream: bool | None = Field(None, description="server-sent events, one chunk per piece of text")
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1, description="one choice per request")
    user: str | None = Field(None, description="accepted and ignored")
    # Fields that would change the answer in a way this server does not do: refused unless left at their default.
    tools: list[Tool] | None = Field(None, description="functions the model may call, as OpenAI sends them")
    tool_choice: Literal["auto", "none", "required"] | NamedChoice | None = Field(
        None, description="auto (default with tools), none (tools left out), required, or a named function"
    )
    parallel_tool_calls: bool | None = Field(
        None, description="false: one call at most (held by the tool grammar); default: several"
    )
    response_format: dict | None = Field(None, description="refused unless {'type': 'text'}")
    logprobs: bool | None = Field(None, description="refused if true")
    top_logprobs: int | None = Field(None, description="refused")
    logit_bias: dict | None = Field(None, description="refused unless empty")
    presence_penalty: float | None = Field(None, description="refused unless 0")
    frequency_penalty: float | None = Field(None, description="refused unless 0")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class OutputCall(BaseModel):
    id: str
    type: Literal["function"]
    function: dict = Field(description="name, and arguments as a JSON string")


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[OutputCall] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class DeltaCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: FinishReason | None
    logprobs: None


class ChatCompletionChunk(BaseModel):
    """One `data:` line of a stream; the last before `data: [DONE]` has usage and no choices when asked for."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]
    model: str
