"""The OpenAI-compatible chat API: FastAPI routes over the engine (instructify/serving/engine.py).

POST /v1/chat/completions (server-sent events with `stream: true`), GET /v1/models, /health, /metrics, and
/openapi.json with /docs. Messages are checked like training data and rendered with the model's own
`apply_chat_template`; generation stops on the model's generation_config eos ids (or a request's `stop`
strings), so `finish_reason` is `stop` exactly when the reply ended there and `length` at `max_tokens`.

Each request's job runs in the engine's one generation thread; its events come back to the event loop through
`_Events`, so no request holds a thread while it waits, and a client that leaves frees its row at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus
from starlette.exceptions import HTTPException
from transformers import PreTrainedTokenizerBase

from instructify.chat.template import special_texts
from instructify.serving import schema, tool_replies
from instructify.serving.engine import Engine, Job, Overloaded
from instructify.serving.guard import Guard, error_body
from instructify.serving.request import RequestError, Settings, settings_of

DISCONNECT_POLL = 1.0  # seconds between checks that a client waiting for a whole reply is still there


class _Events:
    """A job's events, put by the generation thread and awaited on the request's event loop."""

    def __init__(self):
        self.loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()

    def put(self, event: tuple) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def get(self) -> tuple:
        return await self.queue.get()


def _error(status: int, message: str, param: str | None = None, headers: dict | None = None, code=None):
    return Response(error_body(status, message, param, code), status, headers, "application/json")


def _param(loc: tuple) -> str | None:
    """A pydantic error's location as OpenAI names a parameter: messages[0].role. Union members' tags (`str`,
    `list[str]`) are not fields and are left out."""
    parts = [p for p in loc if p != "body" and (isinstance(p, int) or p in _FIELDS)]
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    return text or None


_FIELDS = {
    name
    for model in (
        schema.ChatCompletionRequest,
        schema.Message,
        schema.StreamOptions,
        schema.Tool,
        schema.FunctionSchema,
        schema.ToolCall,
        schema.FunctionCall,
    )
    for name in model.model_fields
}


def _handlers() -> dict:
    async def invalid(request, error: RequestValidationError):
        first = error.errors()[0]
        param = _param(tuple(first["loc"]))
        got = (
            "" if first["type"] == "missing" else f", got {json.dumps(first.get('input'), default=repr)[:80]}"
        )
        return _error(400, f"{param or 'the body'}: {first['msg']}{got}", param)

    async def refused(request, error: RequestError):
        return _error(error.status, str(error), error.param)

    async def overloaded(request, error: Overloaded):
        return _error(error.status, str(error), None, {"Retry-After": str(error.retry_after)}, "server_busy")

    async def http(request, error: HTTPException):
        message = f"no such path {request.url.path}" if error.status_code == 404 else str(error.detail)
        return _error(error.status_code, message, headers=getattr(error, "headers", None))

    return {
        RequestValidationError: invalid,
        RequestError: refused,
        Overloaded: overloaded,
        HTTPException: http,
    }


ERRORS = {s: {"model": schema.ErrorResponse} for s in (400, 401, 408, 413, 415, 500, 503)}
ERRORS[429] = {"model": schema.ErrorResponse, "headers": {"Retry-After": {"schema": {"type": "integer"}}}}
_REF = "#/components/schemas/{model}"
# Each server-sent event of a stream: a chunk (or an error) as JSON, then the literal [DONE].
STREAM_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "anyOf": [
                {"const": "[DONE]"},
                {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {
                        "anyOf": [
                            {"$ref": _REF.format(model=m)} for m in ("ChatCompletionChunk", "ErrorResponse")
                        ]
                    },
                },
            ]
        }
    },
}
COMPLETION = {200: {"content": {"text/event-stream": {"schema": STREAM_EVENT}}}} | ERRORS


def make_app(
    engine: Engine,
    tokenizer: PreTrainedTokenizerBase,
    model_id: str,
    defaults: dict,
    *,
    api_key: str | None,
    max_body: int,
    request_timeout: float,
    grammars=None,
) -> Guard:
    """The API as an ASGI app: the routes behind the Guard (tokens, body, deadlines, counts by status)."""
    AppStatus.disable_automatic_graceful_drain()  # the engine decides what finishes within the grace period

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await anyio.to_thread.run_sync(engine.stop, 0)

    app = FastAPI(title="instructify", lifespan=lifespan, exception_handlers=_handlers())
    guard = Guard(
        app,
        body_paths={"/v1/chat/completions"},
        api_key=api_key,
        max_body=max_body,
        request_timeout=request_timeout,
    )
    forbidden, created = special_texts(tokenizer), int(time.time())

    @app.get("/health", response_model=schema.Health)
    async def health():
        return {"status": "ok", "model": model_id}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return metrics_text(engine.stats(), guard.statuses)

    @app.get("/v1/models", response_model=schema.ModelList, responses={401: ERRORS[401]})
    async def models():
        card = {"id": model_id, "object": "model", "created": created, "owned_by": "instructify"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", response_model=schema.ChatCompletion, responses=COMPLETION)
    async def chat_completions(body: schema.ChatCompletionRequest, request: Request):
        settings = await run_in_threadpool(settings_of, body, tokenizer, forbidden, defaults, grammars)
        job = _job(settings)
        engine.submit(job)  # or Overloaded: 429 or 503 with Retry-After
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_id}
        if settings.stream:
            return EventSourceResponse(_stream(job, settings, head), sep="\n")
        return await _complete(job, settings, head, request)

    app.openapi = lambda: _openapi(app)
    return guard


def _job(settings: Settings) -> Job:
    """The engine's job for a request's settings, its events bridged to this event loop."""
    return Job(
        settings.prompt_ids,
        settings.max_tokens,
        settings.sampling,
        settings.seed,
        settings.stop,
        _Events(),
        matcher=settings.matcher,
    )


async def _complete(job: Job, settings: Settings, head: dict, request: Request) -> Response:
    """The whole reply once the engine has finished it; the job is cancelled if its client leaves meanwhile."""
    parts, loop = [], asyncio.get_running_loop()
    check = loop.time() + DISCONNECT_POLL  # on the clock: events may keep coming all the while
    while True:
        try:
            event = await asyncio.wait_for(job.events.get(), max(0.0, check - loop.time()))
        except TimeoutError:
            event = None
        if loop.time() >= check:
            if await request.is_disconnected():
                job.cancelled.set()
                return Response(status_code=499)  # nginx's "client closed request": nobody reads it
            check = loop.time() + DISCONNECT_POLL
        if event is None:
            continue
        if event[0] == "text":
            parts.append(event[1])
        elif event[0] == "error":
            return _error(event[2], event[1])
        else:
            break
    message, reason = tool_replies.message_of(settings.prefix + "".join(parts), event[1], settings.tools)
    choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
    usage = _usage(len(settings.prompt_ids), event[2])
    return JSONResponse(head | {"object": "chat.completion", "choices": [choice], "usage": usage})


async def _stream(job: Job, settings: Settings, head: dict):
    """The reply as OpenAI streams it: a role chunk, a chunk per piece of text, one with the finish reason, then
    usage if asked for, then [DONE]. A client that leaves or stops reading cancels the job (finally)."""
    head = head | {"object": "chat.completion.chunk"}

    def chunk(delta: dict, reason: str | None = None) -> str:
        return json.dumps(
            head | {"choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}
        )

    splitter, calls = (tool_replies.StreamSplitter() if settings.tools else None), 0

    def deltas(text: str, end: bool = False) -> list[dict]:
        """Content and tool-call deltas of a piece of the reply (only content without tools)."""
        nonlocal calls
        if splitter is None:
            return [{"content": text}] if text else []
        out = []
        for kind, value in splitter.feed(text) + (splitter.finish() if end else []):
            if kind == "text":
                out.append({"content": value})
            else:
                out += tool_replies.call_chunks(calls, value)
                calls += 1
        return out

    try:
        yield chunk({"role": "assistant", "content": ""})
        for delta in deltas(settings.prefix):
            yield chunk(delta)
        while (event := await job.events.get())[0] == "text":
            for delta in deltas(event[1]):
                yield chunk(delta)
        for delta in deltas("", end=True):
            yield chunk(delta)
        if event[0] == "error":
            yield json.dumps(
                {"error": {"message": event[1], "type": "server_error", "param": None, "code": None}}
            )
        else:
            yield chunk({}, "tool_calls" if calls and event[1] == "stop" else event[1])
            if settings.include_usage:
                yield json.dumps(head | {"choices": [], "usage": _usage(len(settings.prompt_ids), event[2])})
        yield "[DONE]"
    finally:
        job.cancelled.set()  # a no-op once the job has ended


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema, less its 422 answers: a request that breaks the schema gets a 400, as OpenAI's does."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version="1", routes=app.routes)
        for path in spec["paths"].values():
            for operation in path.values():
                operation["responses"].pop("422", None)
        components = spec["components"]["schemas"]
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        chunk = schema.ChatCompletionChunk.model_json_schema(ref_template=_REF)  # named by STREAM_EVENT only
        components |= chunk.pop("$defs", {}) | {"ChatCompletionChunk": chunk}
        app.openapi_schema = spec
    return app.openapi_schema


def metrics_text(stats: dict, statuses: dict[int, int]) -> str:
    """Prometheus text exposition of the engine's state and the answers given so far."""
    lines = [
        "# TYPE instructify_requests_waiting gauge",
        f"instructify_requests_waiting {stats['waiting']}",
        "# TYPE instructify_batch_running gauge",
        f"instructify_batch_running {stats['running']}",
        "# TYPE instructify_generated_tokens_total counter",
        f"instructify_generated_tokens_total {stats['tokens_total']}",
        "# TYPE instructify_generated_tokens_per_second gauge",
        f"instructify_generated_tokens_per_second {stats['tokens_per_s']}",
        "# TYPE instructify_chat_responses_total counter",
    ]
    lines += [f'instructify_chat_responses_total{{status="{k}"}} {v}' for k, v in sorted(statuses.items())]
    return "\n".join(lines) + "\n"
