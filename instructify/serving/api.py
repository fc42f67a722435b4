"""`instructify serve --model PATH`: an OpenAI-compatible chat API over a model folder, through its template.

POST /v1/chat/completions (streaming with `stream: true`), GET /v1/models, GET /health. Messages are checked like
training data (roles, order, special-token text) and rendered with the model's own `apply_chat_template`;
generation stops on the model's generation_config eos ids, so `finish_reason` is `stop` exactly when the reply
ended on `<|im_end|>` and `length` when it ran into `max_tokens`.

Why our own server rather than vLLM or TGI: neither installs here with the CPU torch build, and the point is to
try the result of `make train` in the clients users already have, with the same checks as training. The engine
(instructify/serving/engine.py) decodes the running requests together and lets new ones join at each step; each HTTP thread only
reads its request's queue, so a slow or gone streaming client never holds up the others. Limits: --max-batch rows,
--max-pending waiting requests (then 429 with Retry-After), --request-timeout to send a request (then 408) and for
each write of a reply (then the row is cancelled).
"""

from __future__ import annotations

import contextlib
import ctypes
import hmac
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructify.chat.template import special_texts
from instructify.data.validate import check_messages
from instructify.serving.engine import MAX_PENDING, TOKENIZER_LOCK, Engine, Job, Overloaded

log = logging.getLogger(__name__)

MAX_TOKENS_LIMIT = 4096  # per request; a client asking for more gets a 400 naming max_tokens
DEFAULT_MAX_TOKENS = 256
MAX_BODY_BYTES = 1 << 20
REQUEST_TIMEOUT = 30.0  # seconds a client has to send its whole request, and for each write of a reply
GRACE = 30.0  # seconds running requests get to finish after SIGTERM, as Kubernetes' default grace period
STREAM_SEND_BUFFER = 16384  # bytes the kernel holds for a stream: a client that stops reading stalls it soon
API_KEY_ENV = "INSTRUCTIFY_API_KEY"
# Shapes each kernel cache of CPU bf16 matmuls keeps (oneDNN's primitive cache and ideep's LRU, 1,024 by default,
# ~0.27 MB a shape each): a server meets new shapes at almost every step (rows x cache length), so at the default
# the soak's memory climbed ~20 MB/min for minutes; at 64 it was flat after 45 s and no slower (docs/serving.md).
KERNEL_CACHE_SHAPES = 64


class RequestError(ValueError):
    """A bad request: answered with `status` and an OpenAI-style error naming `param`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


def _check_messages(messages: object, forbidden: tuple[str, ...]) -> list[dict]:
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
        elif kind is not None and kind != "text":
            raise RequestError(
                f"{where}[{j}] is a {kind!r} part; this model reads text only: send text parts", where
            )
        else:
            raise RequestError(f"{where}[{j}] must be {{'type': 'text', 'text': '...'}}", where)
    return "\n".join(texts)


def _number(body: dict, key: str, default, low: float, high: float, integer: bool = False):
    value = body.get(key)
    if value is None:
        return default
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise RequestError(f"{key} must be {what} from {low} to {high}, got {value!r}", key)
    return value


def parse_request(
    body: dict, tokenizer: PreTrainedTokenizerBase, forbidden: tuple[str, ...], defaults
) -> dict:
    """Validated settings of one chat completion request; RequestError names the field that is wrong."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    messages = _check_messages(body.get("messages"), forbidden)
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, key, DEFAULT_MAX_TOKENS, 1, MAX_TOKENS_LIMIT, integer=True)
    temperature = _number(body, "temperature", defaults["temperature"], 0, 2)
    top_p = _number(body, "top_p", defaults["top_p"], 1e-9, 1)
    if _number(body, "n", 1, 1, 1, integer=True) != 1:
        raise RequestError("n: only one choice per request", "n")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError("seed must be an integer", "seed")
    if body.get("stop") not in (None, [], ""):
        raise RequestError("stop: not supported; the model stops at <|im_end|> by itself", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("stream_options must be an object", "stream_options")
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
    do_sample = temperature > 0
    return {
        "prompt_ids": prompt_ids,
        "max_tokens": max_tokens,
        "sampling": (do_sample, float(temperature) if do_sample else 1.0, float(top_p) if do_sample else 1.0),
        "seed": seed,
        "stream": stream,
        "include_usage": bool(options.get("include_usage")),
    }


def _model_defaults(model: PreTrainedModel) -> dict:
    g = model.generation_config
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 8192
    return {
        "temperature": (g.temperature or 1.0) if g.do_sample else 0.0,  # the model's own choice by default
        "top_p": g.top_p or 1.0,
        "context": context,
    }


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def bound_kernel_caches(shapes: int = KERNEL_CACHE_SHAPES) -> None:
    """Cap the bf16 matmul kernel caches (a value already in the environment wins). Both libraries read their
    variable at the process's first bf16 matmul, so this must run before the engine's first step.

    Also keep glibc's mmap threshold at its initial 128 KiB (MALLOC_MMAP_THRESHOLD_ in the environment wins): on
    AMX CPUs the bf16 kernels' buffers of each new shape otherwise fragment the heap, which glibc's rising
    threshold keeps them in (tests/test_serve.py's 180 new lengths: +68 MB with the caches capped, +15 MB so)."""
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, str(shapes))
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator has no such threshold
            ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def make_server(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_id: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_batch: int = 8,
    max_body: int = MAX_BODY_BYTES,
    max_pending: int = MAX_PENDING,
    request_timeout: float = REQUEST_TIMEOUT,
) -> ThreadingHTTPServer:
    """The HTTP server (not yet serving: call serve_forever, or run it in a thread as the tests do)."""
    bound_kernel_caches()
    engine = Engine(model, tokenizer, max_batch, max_pending)
    server = Server(
        (host, port),
        # every connection the OS accepts gets an answer: a backlog of socketserver's default 5 resets a burst
        backlog=max(128, 2 * (max_pending + max_batch)),
        engine=engine,
        tokenizer=tokenizer,
        model_id=model_id,
        defaults=_model_defaults(model),
        api_key=api_key,
        max_body=max_body,
        request_timeout=request_timeout,
    )
    threading.Thread(target=_reap, args=(server,), name="request-timeouts", daemon=True).start()
    return server


class Server(ThreadingHTTPServer):
    """The HTTP server, with what its handlers share (`self.server.<name>` in a Handler)."""

    daemon_threads = True
    active = 0  # connections being handled

    def __init__(
        self,
        address: tuple[str, int],
        *,
        backlog: int,
        engine: Engine,
        tokenizer: PreTrainedTokenizerBase,
        model_id: str,
        defaults: dict,
        api_key: str | None,
        max_body: int,
        request_timeout: float,
    ):
        self.request_queue_size = backlog  # before the socket listens, in ThreadingHTTPServer's __init__
        self.engine, self.tokenizer, self.model_id, self.defaults = engine, tokenizer, model_id, defaults
        self.api_key, self.max_body, self.request_timeout = api_key, max_body, request_timeout
        self.forbidden = special_texts(tokenizer)
        self.created = int(time.time())
        self.statuses: dict[int, int] = {}  # chat completion requests answered, by HTTP status
        self.reading: dict = {}  # handler -> time by which its whole request must have arrived
        self.reading_lock = threading.Lock()
        super().__init__(address, Handler)


def _time_out(handler: Handler) -> None:
    """Answer 408 to a client that has not sent its whole request in time (slowloris, a body shorter than
    its Content-Length) and close the connection; its handler thread then wakes up and ends."""
    message = f"the request did not arrive within {handler.server.request_timeout:g} s"
    error = {"message": message, "type": "timeout"}
    data = json.dumps({"error": error | {"param": None, "code": None}}).encode()
    head = f"HTTP/1.0 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: {len(data)}"
    with contextlib.suppress(OSError):
        handler.connection.send(f"{head}\r\nConnection: close\r\n\r\n".encode() + data, socket.MSG_DONTWAIT)
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)


def _reap(server: Server) -> None:
    while True:
        time.sleep(min(0.25, server.request_timeout / 4))
        now = time.monotonic()
        with server.reading_lock:
            late = [h for h, deadline in server.reading.items() if deadline < now]
            for handler in late:
                handler.timed_out = True
                del server.reading[handler]
        for handler in late:
            _time_out(handler)


class _Connection(BaseHTTPRequestHandler):
    """One connection of a Server: its deadlines, logging, counts by status and JSON or text answers. The
    answers to a chat completion are a _Completion's, the routes a Handler's (below)."""

    server: Server
    server_version = "instructify"
    protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when the connection closes
    timed_out = False

    def setup(self):
        # while the request arrives, the reaper's deadline comes first (and answers 408); then each write
        self.timeout = self.server.request_timeout + 5
        super().setup()
        with self.server.reading_lock:
            self.server.reading[self] = time.monotonic() + self.server.request_timeout
            self.server.active += 1

    def handle(self):
        with contextlib.suppress(OSError):  # the client left, or stalled, before the answer
            super().handle()

    def finish(self):
        with self.server.reading_lock:
            self.server.reading.pop(self, None)
            self.server.active -= 1
        with contextlib.suppress(OSError):
            super().finish()

    def _request_read(self) -> bool:
        """The request is in: the reaper leaves this connection alone. False if it timed out meanwhile."""
        with self.server.reading_lock:
            self.server.reading.pop(self, None)
            if self.timed_out:
                return False
        self.connection.settimeout(self.server.request_timeout)  # a client that stops reading our reply
        return True

    def log_message(self, fmt, *args):  # through logging, never the Authorization header
        log.info("%s %s", self.address_string(), fmt % args)

    def send_response(self, code, message=None):
        if self.command == "POST":  # one thread per request; the GIL keeps the count whole enough
            statuses = self.server.statuses
            statuses[code] = statuses.get(code, 0) + 1
        super().send_response(code, message)

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: RequestError) -> None:
        kind = {401: "authentication_error", 404: "not_found_error"}.get(
            error.status, "invalid_request_error"
        )
        self._json(
            error.status,
            {"error": {"message": str(error), "type": kind, "param": error.param, "code": None}},
        )


def _events(job: Job):
    """The job's events as the engine sends them, up to its end or error."""
    while True:
        event = job.events.get()
        yield event
        if event[0] != "text":
            return


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Completion(_Connection):
    """A chat completion: its job queued in the engine, answered whole or streamed as it is generated."""

    def _submit(self, settings: dict) -> Job | None:
        """The request's job, queued; None if the engine is full or stopping (answered 429 or 503)."""
        try:
            return self.server.engine.submit(
                Job(settings["prompt_ids"], settings["max_tokens"], settings["sampling"], settings["seed"])
            )
        except Overloaded as e:
            kind = "rate_limit_error" if e.status == 429 else "server_error"
            error = {"message": str(e), "type": kind, "param": None, "code": "server_busy"}
            self._json(e.status, {"error": error}, {"Retry-After": str(e.retry_after)})
            return None

    def _complete(self, job: Job, reply_id: str, prompt_tokens: int) -> None:
        parts = []
        for event in _events(job):
            if event[0] == "text":
                parts.append(event[1])
            elif event[0] == "error":
                error = {"message": event[1], "type": "server_error", "param": None, "code": None}
                return self._json(event[2], {"error": error})
            else:
                _, reason, completion = event
        message = {"role": "assistant", "content": "".join(parts)}
        choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
        payload = {
            "id": reply_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server.model_id,
        }
        payload |= {"choices": [choice], "usage": _usage(prompt_tokens, completion)}
        return self._json(200, payload)

    def _stream(self, job: Job, reply_id: str, settings: dict) -> None:
        # a small send buffer, so that a client that stops reading blocks our write (and times out) soon
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        base = {
            "id": reply_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.server.model_id,
        }

        def send(delta: dict, reason: str | None = None, **extra) -> None:
            chunk = base | {
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
            }
            self.wfile.write(f"data: {json.dumps(chunk | extra)}\n\n".encode())
            self.wfile.flush()

        try:
            send({"role": "assistant", "content": ""})
            for event in _events(job):
                if event[0] == "text":
                    send({"content": event[1]})
                elif event[0] == "error":
                    self.wfile.write(f"data: {json.dumps({'error': {'message': event[1]}})}\n\n".encode())
                    break
                else:
                    send({}, event[1])
                    if settings["include_usage"]:
                        usage = _usage(len(settings["prompt_ids"]), event[2])
                        self.wfile.write(
                            f"data: {json.dumps(base | {'choices': [], 'usage': usage})}\n\n".encode()
                        )
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:  # gone, or not reading for request_timeout: its row stops at the next step
            job.cancelled.set()


class Handler(_Completion):
    """The routes: GET /health, /metrics and /v1/models; POST /v1/chat/completions, its body read and checked."""

    def _authorized(self) -> bool:
        api_key = self.server.api_key
        if not api_key:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            return True
        self._error(RequestError(f"missing or wrong bearer token (the server's {API_KEY_ENV})", status=401))
        return False

    def do_GET(self):
        if not self._request_read():
            return None
        if self.path == "/health":
            return self._json(200, {"status": "ok", "model": self.server.model_id})
        if self.path == "/metrics":
            return self._text(200, metrics_text(self.server.engine.stats(), self.server.statuses))
        if not self._authorized():
            return None
        if self.path == "/v1/models":
            model_id, created = self.server.model_id, self.server.created
            entry = {"id": model_id, "object": "model", "created": created, "owned_by": "instructify"}
            return self._json(200, {"object": "list", "data": [entry]})
        return self._error(RequestError(f"no such path {self.path}", status=404))

    def do_POST(self):
        if self.timed_out or not self._authorized():
            return None
        if self.path != "/v1/chat/completions":
            return self._error(RequestError(f"no such path {self.path}", status=404))
        try:
            settings = self._read_request()
        except RequestError as e:
            return self._error(e)
        if settings is None:  # it timed out while arriving: the reaper answered 408
            return None
        job = self._submit(settings)
        if job is None:
            return None
        reply_id = f"chatcmpl-{uuid.uuid4().hex}"
        if settings["stream"]:
            return self._stream(job, reply_id, settings)
        return self._complete(job, reply_id, len(settings["prompt_ids"]))

    def _read_request(self) -> dict | None:
        """The request's checked settings (parse_request); None if it timed out while arriving. A bad request
        raises RequestError."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError("a Content-Length header is required", status=411) from None
        max_body = self.server.max_body
        if length > max_body:
            if length <= 16 * max_body:  # read it, so that the client sees the answer rather than a reset
                left = length
                while left > 0 and (chunk := self.rfile.read(min(1 << 16, left))):
                    left -= len(chunk)
            raise RequestError(f"the body is {length} bytes; the limit is {max_body}", status=413)
        data = self.rfile.read(length)
        if not self._request_read():
            return None
        if len(data) < length:
            raise RequestError(f"the body ended after {len(data)} bytes; its Content-Length said {length}")
        try:
            body = json.loads(data or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the body is not valid JSON: {e}") from None
        except RecursionError:
            raise RequestError("the body is JSON nested too deeply") from None
        return parse_request(body, self.server.tokenizer, self.server.forbidden, self.server.defaults)


def serve_until_stopped(server: ThreadingHTTPServer, grace: float = GRACE) -> None:
    """Serve until SIGTERM (or Ctrl-C); then stop accepting connections, let the admitted requests finish for up
    to `grace` seconds, end the rest with a 503 and return once their answers are written."""

    def on_signal(signum, frame):
        log.info(
            "%s: no new connections; finishing the running requests (up to %g s)",
            signal.Signals(signum).name,
            grace,
        )
        threading.Thread(
            target=server.shutdown
        ).start()  # from another thread: serve_forever must return first

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    server.serve_forever()
    server.server_close()  # the listening socket: new connections are refused from here on
    server.engine.stop(grace)
    deadline = time.monotonic() + 5
    while server.active and time.monotonic() < deadline:  # the last answers being written
        time.sleep(0.05)


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


def api_key_from_env(name: str = API_KEY_ENV) -> str | None:
    return os.environ.get(name) or None
