"""`python -m train serve --model PATH`: an OpenAI-compatible chat API over a model folder, through its template.

POST /v1/chat/completions (streaming with `stream: true`), GET /v1/models, GET /health. Messages are checked like
training data (roles, order, special-token text) and rendered with the model's own `apply_chat_template`;
generation stops on the model's generation_config eos ids, so `finish_reason` is `stop` exactly when the reply
ended on `<|im_end|>` and `length` when it ran into `max_tokens`.

Why our own server rather than vLLM or TGI: neither installs here with the CPU torch build, and the point is to
try the result of `make train` in the clients users already have, with the same checks as training. One thread
owns the model and generates queued requests together (same sampling settings, up to --max-batch, left-padded);
each HTTP thread only reads its request's queue, so a slow or gone streaming client never holds up the others.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from train.evaluate import pad, stop_ids_of
from train.template import special_texts

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
MAX_TOKENS_LIMIT = 4096  # per request; a client asking for more gets a 400 naming max_tokens
DEFAULT_MAX_TOKENS = 256
MAX_BODY_BYTES = 1 << 20
MAX_PENDING = 64  # requests waiting for a row; more get an immediate 429 with Retry-After
REQUEST_TIMEOUT = 30.0  # seconds a client has to send its whole request, and for each write of a reply
STREAM_SEND_BUFFER = 16384  # bytes the kernel holds for a stream: a client that stops reading stalls it soon
API_KEY_ENV = "INSTRUCTIFY_API_KEY"
# A fast tokenizer used from several threads at once can fail with "Already borrowed" (it mutates its
# truncation/padding state while encoding): request threads encode, the generation thread decodes.
TOKENIZER_LOCK = threading.Lock()


class Overloaded(Exception):
    """More requests wait than --max-pending allows: answered 429 with Retry-After (seconds)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class RequestError(ValueError):
    """A bad request: answered with `status` and an OpenAI-style error naming `param`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


@dataclass
class Job:
    prompt_ids: list[int]
    max_tokens: int
    sampling: tuple  # (do_sample, temperature, top_p): jobs generate together only when these agree
    seed: int | None = None
    events: queue.Queue = field(default_factory=queue.Queue)  # ("text", str) ... then ("end", reason, n)
    cancelled: threading.Event = field(default_factory=threading.Event)


def _check_messages(messages: object, forbidden: tuple[str, ...]) -> list[dict]:
    """The training data's rules: system only first, then user and assistant alternating from user; the last
    message is the user's (the model writes the next assistant turn); no special-token text in any content."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects", "messages")
    expected, checked = "user", []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with role and content", where)
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RequestError(
                f"{where}.role is {role!r}; expected one of {', '.join(ROLES)}", f"{where}.role"
            )
        if isinstance(content, list):
            content = _text_of_parts(content, f"{where}.content")
        if not isinstance(content, str):
            raise RequestError(
                f"{where}.content must be a string or a list of text parts", f"{where}.content"
            )
        found = next((t for t in forbidden if t in content), None)
        if found:
            raise RequestError(
                f"{where}.content holds the special-token text {found}, which would act as a control token; "
                "the training data rejects it too",
                f"{where}.content",
            )
        if role == "system":
            if i != 0:
                raise RequestError(
                    f"{where}.role: system is only allowed as the first message", f"{where}.role"
                )
            checked.append({"role": role, "content": content})
            continue
        if role != expected:
            raise RequestError(
                f"{where}.role is {role}, {expected} expected: turns alternate, starting with user",
                f"{where}.role",
            )
        expected = "assistant" if role == "user" else "user"
        checked.append({"role": role, "content": content})
    if messages[-1].get("role") != "user":
        raise RequestError(
            f"messages[{len(messages) - 1}] must be the user's: the model answers the last message",
            "messages",
        )
    return checked


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


class _Fanout(BaseStreamer):
    """Receives each decoding step's tokens for the whole batch and hands every job its own new text."""

    def __init__(self, jobs: list[Job], tokenizer: PreTrainedTokenizerBase, stop_ids: set[int], engine):
        self.jobs, self.tokenizer, self.stop_ids, self.engine = jobs, tokenizer, stop_ids, engine
        self.ids: list[list[int]] = [[] for _ in jobs]
        self.sent = [""] * len(jobs)
        self.done: list[str | None] = [None] * len(jobs)  # finish reason once a job is over
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first passes the prompts
            self.prompt_seen = True
            return
        made = sum(d is None for d in self.done)
        self.engine.tokens.append((time.monotonic(), made))
        self.engine.tokens_total += made
        for k, token in enumerate(value.reshape(-1).tolist()):
            if self.done[k] is not None:
                continue
            self.ids[k].append(token)
            if token in self.stop_ids:
                self._end(k, "stop")
                continue
            with TOKENIZER_LOCK:
                text = self.tokenizer.decode(self.ids[k], skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # hold back a partly decoded character
                if text[len(self.sent[k]) :]:
                    self.jobs[k].events.put(("text", text[len(self.sent[k]) :]))
                self.sent[k] = text
            if len(self.ids[k]) >= self.jobs[k].max_tokens:
                self._end(k, "length")

    def _end(self, k: int, reason: str) -> None:
        self.done[k] = reason
        with TOKENIZER_LOCK:
            text = self.tokenizer.decode(
                [t for t in self.ids[k] if t not in self.stop_ids], skip_special_tokens=True
            )
        if text[len(self.sent[k]) :]:
            self.jobs[k].events.put(("text", text[len(self.sent[k]) :]))
        self.jobs[k].events.put(("end", reason, len(self.ids[k])))

    def end(self) -> None:
        for k, job in enumerate(self.jobs):
            if self.done[k] is None:  # cancelled, or generate stopped at its own limit
                self._end(k, "cancelled" if job.cancelled.is_set() else "length")


class _JobsDone(StoppingCriteria):
    """Per row: done when its job hit its own max_tokens or its client went away."""

    def __init__(self, jobs: list[Job], width: int):
        self.jobs, self.width = jobs, width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        made = input_ids.shape[1] - self.width
        done = [j.cancelled.is_set() or made >= j.max_tokens for j in self.jobs]
        return torch.tensor(done, device=input_ids.device)


class Engine:
    """One thread owns the model; requests queue up and are generated in batches of compatible settings."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_batch: int = 8,
        max_pending: int = MAX_PENDING,
    ):
        self.model, self.tokenizer, self.max_batch = model.eval(), tokenizer, max_batch
        self.max_pending = max_pending
        self.admit_lock = threading.Lock()
        self.waiting = 0  # submitted and not yet generating
        self.running = 0  # rows in the batch being generated
        self.tokens = deque(
            maxlen=4096
        )  # (time, tokens) of each decoding step: tokens/s over the last seconds
        self.tokens_total = 0
        self.finished: deque[float] = deque(maxlen=1000)  # when the last requests ended
        self.stop_ids = stop_ids_of(model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stop_ids)
        self.pending: queue.Queue[Job] = queue.Queue()
        self.held: list[Job] = []  # taken from the queue but not compatible with the batch that was running
        self.recent: deque[tuple[str, int]] = deque(maxlen=1000)  # (finish reason, tokens) of the last jobs
        self.thread = threading.Thread(target=self._loop, name="generate", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Job:
        with self.admit_lock:
            if self.waiting >= self.max_pending:
                raise Overloaded(
                    f"{self.waiting} requests are waiting (the server's --max-pending); try again later",
                    self.retry_after(),
                )
            self.waiting += 1
        self.pending.put(job)
        return job

    def retry_after(self) -> int:
        """Seconds until the waiting requests are likely served, from the pace of the last minute's replies."""
        since = time.monotonic() - 60
        rate = sum(t > since for t in self.finished) / 60
        return int(min(60, max(1, self.waiting / rate))) if rate else 5

    def tokens_per_s(self, window: float = 10.0) -> float:
        since = time.monotonic() - window
        return sum(n for t, n in self.tokens if t > since) / window

    def _took(self, jobs: list[Job]) -> None:
        with self.admit_lock:
            self.waiting -= len(jobs)

    def _next_batch(self) -> list[Job]:
        first = self.held.pop(0) if self.held else self.pending.get()
        batch, keep = [first], []
        candidates = self.held + self._drain()
        for job in candidates:
            compatible = job.sampling == first.sampling and job.seed is None and first.seed is None
            (batch if compatible and len(batch) < self.max_batch else keep).append(job)
        self.held = keep
        self._took(batch)
        ready = [j for j in batch if not j.cancelled.is_set()]
        # the others' clients left while they waited: recorded as cancelled, never generated
        self.recent.extend(("cancelled", 0) for _ in range(len(batch) - len(ready)))
        return ready

    def _drain(self) -> list[Job]:
        jobs = []
        while True:
            try:
                jobs.append(self.pending.get_nowait())
            except queue.Empty:
                return jobs

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                continue
            self.running = len(batch)
            try:
                self.generate(batch)
            except Exception as error:  # a failed batch ends its requests with an error; the server goes on
                log.exception("generation failed")
                for job in batch:
                    job.events.put(("error", f"generation failed: {type(error).__name__}: {error}"))
            self.running = 0
            self.finished.extend([time.monotonic()] * len(batch))

    def stats(self) -> dict:
        return {
            "waiting": self.waiting,
            "running": self.running,
            "max_batch": self.max_batch,
            "max_pending": self.max_pending,
            "tokens_total": self.tokens_total,
            "tokens_per_s": round(self.tokens_per_s(), 2),
        }

    @torch.no_grad()
    def generate(self, jobs: list[Job]) -> None:
        do_sample, temperature, top_p = jobs[0].sampling
        if jobs[0].seed is not None:
            torch.manual_seed(jobs[0].seed)
        inputs = pad([j.prompt_ids for j in jobs], self.pad_id, self.model.device, left=True)
        streamer = _Fanout(jobs, self.tokenizer, self.stop_ids, self)
        sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
        self.model.generate(
            **inputs,
            max_new_tokens=max(j.max_tokens for j in jobs),
            do_sample=do_sample,
            **sampling,
            pad_token_id=self.pad_id,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_JobsDone(jobs, inputs["input_ids"].shape[1])]),
        )
        self.recent.extend(zip(streamer.done, map(len, streamer.ids)))


def _model_defaults(model: PreTrainedModel) -> dict:
    g = model.generation_config
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 8192
    return {
        "temperature": (g.temperature or 1.0) if g.do_sample else 0.0,  # the model's own choice by default
        "top_p": g.top_p or 1.0,
        "context": context,
    }


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
    engine = Engine(model, tokenizer, max_batch, max_pending)
    statuses: dict[int, int] = {}  # chat completion requests answered, by HTTP status
    reading: dict = {}  # handler -> time by which its whole request must have arrived
    reading_lock = threading.Lock()
    forbidden = special_texts(tokenizer)
    defaults = _model_defaults(model)
    created = int(time.time())

    class Handler(BaseHTTPRequestHandler):
        server_version = "instructify"
        protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when the connection closes
        # while the request arrives, the reaper's deadline comes first (and answers 408); then each write
        timeout = request_timeout + 5
        timed_out = False

        def setup(self):
            super().setup()
            with reading_lock:
                reading[self] = time.monotonic() + request_timeout

        def handle(self):
            with contextlib.suppress(OSError):  # the client left, or stalled, before the answer
                super().handle()

        def finish(self):
            with reading_lock:
                reading.pop(self, None)
            with contextlib.suppress(OSError):
                super().finish()

        def _request_read(self) -> bool:
            """The request is in: the reaper leaves this connection alone. False if it timed out meanwhile."""
            with reading_lock:
                reading.pop(self, None)
                if self.timed_out:
                    return False
            self.connection.settimeout(request_timeout)  # a client that stops reading our reply
            return True

        def log_message(self, fmt, *args):  # through logging, never the Authorization header
            log.info("%s %s", self.address_string(), fmt % args)

        def send_response(self, code, message=None):
            if self.command == "POST":  # one thread per request; the GIL keeps the count whole enough
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

        def _authorized(self) -> bool:
            if not api_key:
                return True
            given = self.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return True
            self._error(
                RequestError(f"missing or wrong bearer token (the server's {API_KEY_ENV})", status=401)
            )
            return False

        def do_GET(self):
            if not self._request_read():
                return None
            if self.path == "/health":
                return self._json(200, {"status": "ok", "model": model_id})
            if self.path == "/metrics":
                return self._text(200, metrics_text(engine.stats(), statuses))
            if not self._authorized():
                return None
            if self.path == "/v1/models":
                entry = {"id": model_id, "object": "model", "created": created, "owned_by": "instructify"}
                return self._json(200, {"object": "list", "data": [entry]})
            return self._error(RequestError(f"no such path {self.path}", status=404))

        def do_POST(self):
            if self.timed_out:
                return None
            if not self._authorized():
                return None
            if self.path != "/v1/chat/completions":
                return self._error(RequestError(f"no such path {self.path}", status=404))
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._error(RequestError("a Content-Length header is required", status=411))
            if length > max_body:
                if length <= 16 * max_body:  # read it, so that the client sees the answer rather than a reset
                    left = length
                    while left > 0 and (chunk := self.rfile.read(min(1 << 16, left))):
                        left -= len(chunk)
                message = f"the body is {length} bytes; the limit is {max_body}"
                return self._error(RequestError(message, status=413))
            data = self.rfile.read(length)
            if not self._request_read():
                return None
            if len(data) < length:
                message = f"the body ended after {len(data)} bytes; its Content-Length said {length}"
                return self._error(RequestError(message))
            try:
                body = json.loads(data or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                return self._error(RequestError(f"the body is not valid JSON: {e}"))
            except RecursionError:
                return self._error(RequestError("the body is JSON nested too deeply"))
            try:
                settings = parse_request(body, tokenizer, forbidden, defaults)
            except RequestError as e:
                return self._error(e)
            try:
                job = engine.submit(
                    Job(
                        settings["prompt_ids"], settings["max_tokens"], settings["sampling"], settings["seed"]
                    )
                )
            except Overloaded as e:
                error = {"message": str(e), "type": "rate_limit_error", "param": None, "code": "server_busy"}
                return self._json(429, {"error": error}, {"Retry-After": str(e.retry_after)})
            reply_id = f"chatcmpl-{uuid.uuid4().hex}"
            if settings["stream"]:
                return self._stream(job, reply_id, settings)
            return self._complete(job, reply_id, len(settings["prompt_ids"]))

        def _events(self, job: Job):
            while True:
                event = job.events.get()
                yield event
                if event[0] != "text":
                    return

        def _usage(self, prompt: int, completion: int) -> dict:
            return {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }

        def _complete(self, job: Job, reply_id: str, prompt_tokens: int) -> None:
            parts = []
            for event in self._events(job):
                if event[0] == "text":
                    parts.append(event[1])
                elif event[0] == "error":
                    return self._json(
                        500, {"error": {"message": event[1], "type": "server_error", "param": None}}
                    )
                else:
                    _, reason, completion = event
            message = {"role": "assistant", "content": "".join(parts)}
            choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
            payload = {
                "id": reply_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_id,
            }
            payload |= {"choices": [choice], "usage": self._usage(prompt_tokens, completion)}
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
                "model": model_id,
            }

            def send(delta: dict, reason: str | None = None, **extra) -> None:
                chunk = base | {
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
                }
                self.wfile.write(f"data: {json.dumps(chunk | extra)}\n\n".encode())
                self.wfile.flush()

            try:
                send({"role": "assistant", "content": ""})
                for event in self._events(job):
                    if event[0] == "text":
                        send({"content": event[1]})
                    elif event[0] == "error":
                        self.wfile.write(f"data: {json.dumps({'error': {'message': event[1]}})}\n\n".encode())
                        break
                    else:
                        send({}, event[1])
                        if settings["include_usage"]:
                            usage = self._usage(len(settings["prompt_ids"]), event[2])
                            self.wfile.write(
                                f"data: {json.dumps(base | {'choices': [], 'usage': usage})}\n\n".encode()
                            )
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except OSError:  # gone, or not reading for request_timeout: its row stops at the next step
                job.cancelled.set()

    class Server(ThreadingHTTPServer):
        # every connection the OS accepts gets an answer: a backlog of socketserver's default 5 resets a burst
        request_queue_size = max(128, 2 * (max_pending + max_batch))
        daemon_threads = True

    def time_out(handler) -> None:
        """Answer 408 to a client that has not sent its whole request in time (slowloris, a body shorter than
        its Content-Length) and close the connection; its handler thread then wakes up and ends."""
        error = {"message": f"the request did not arrive within {request_timeout:g} s", "type": "timeout"}
        data = json.dumps({"error": error | {"param": None, "code": None}}).encode()
        head = (
            f"HTTP/1.0 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: {len(data)}"
        )
        with contextlib.suppress(OSError):
            handler.connection.send(
                f"{head}\r\nConnection: close\r\n\r\n".encode() + data, socket.MSG_DONTWAIT
            )
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)

    def reap() -> None:
        while True:
            time.sleep(min(0.25, request_timeout / 4))
            now = time.monotonic()
            with reading_lock:
                late = [h for h, deadline in reading.items() if deadline < now]
                for handler in late:
                    handler.timed_out = True
                    del reading[handler]
            for handler in late:
                time_out(handler)

    threading.Thread(target=reap, name="request-timeouts", daemon=True).start()
    server = Server((host, port), Handler)
    server.engine = engine
    return server


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
