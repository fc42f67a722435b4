"""`instructify serve`'s process: uvicorn (HTTP/1.1 keep-alive) serving the API on a socket bound up front, the
engine behind it, and the stop on SIGTERM: no new connections, the admitted requests finish for up to the grace
period, the rest end with a 503, exit 0."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

import uvicorn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructify import kernels
from instructify.evals import tool_grammar as tool_grammar_lib
from instructify.evals.generation import stop_ids_of
from instructify.serving.api import make_app
from instructify.serving.engine import MAX_PENDING, Engine
from instructify.serving.guard import API_KEY_ENV, protocol
from instructify.serving.request import model_defaults

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
REQUEST_TIMEOUT = (
    30.0  # seconds a client has for its headers, for its body, and to take each write of a reply
)
GRACE = 30.0  # seconds running requests get to finish after SIGTERM, as Kubernetes' default grace period
KEEP_ALIVE = 5.0  # seconds an idle kept-alive connection stays open (uvicorn's default)


class _Uvicorn(uvicorn.Server):
    """uvicorn's server; when it is told to exit (SIGTERM, Ctrl-C) the engine stops taking requests too and gives
    the admitted ones `grace` seconds, then ends the rest with a 503, which lets uvicorn's wait for them end."""

    grace = GRACE

    def __init__(self, config: uvicorn.Config, engine: Engine):
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit:
            log.info("%s: no new connections; finishing the running requests (up to %g s)", sig, self.grace)
            threading.Thread(target=self.engine.stop, args=(self.grace,), daemon=True).start()
        super().handle_exit(sig, frame)


class Server:
    """The HTTP server, its socket already listening (port 0: a free one, see server_address); serve_forever()
    runs it in the calling thread, shutdown() stops it from another."""

    def __init__(self, app, engine: Engine, host: str, port: int, request_timeout: float, backlog: int):
        self.app, self.engine, self.statuses = app, engine, app.statuses
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=backlog)
        config = uvicorn.Config(
            app,
            http=protocol(request_timeout),
            ws="none",
            lifespan="on",
            log_config=None,  # the CLI's logging, not uvicorn's own
            timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=GRACE + 10,  # a backstop: the engine ends every request by the grace
            backlog=backlog,
        )
        self.uvicorn = _Uvicorn(config, engine)
        self.stopped = threading.Event()

    @property
    def server_address(self) -> tuple:
        return self.socket.getsockname()

    def serve_forever(self) -> None:
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self.stopped.set()

    def shutdown(self, grace: float = 0.0) -> None:
        self.engine.stop(grace)
        self.uvicorn.should_exit = True
        self.stopped.wait(30)


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
    tool_grammar: bool = True,
) -> Server:
    """The server, listening but not yet serving: call serve_forever (the tests run it in a thread).
    `tool_grammar`: calls held to the offered schemas as they are generated (instructify/evals/tool_grammar.py),
    as llama-server holds them."""
    kernels.bound_kernel_caches()
    kernels.keep_mmap_threshold()
    engine = Engine(model, tokenizer, max_batch, max_pending)
    grammars = None
    if tool_grammar:
        try:
            grammars = tool_grammar_lib.Grammars.of(model, tokenizer, stop_ids_of(model))
        except tool_grammar_lib.GrammarUnavailable as e:
            log.warning("tool calls are not held to their schemas: %s", e)
    app = make_app(
        engine,
        tokenizer,
        model_id,
        model_defaults(model),
        api_key=api_key,
        max_body=max_body,
        request_timeout=request_timeout,
        grammars=grammars,
    )
    # every connection the OS accepts gets an answer: a burst beyond the backlog would be reset
    return Server(app, engine, host, port, request_timeout, backlog=max(2048, 2 * (max_pending + max_batch)))


def serve_until_stopped(server: Server, grace: float = GRACE) -> None:
    """Serve until SIGTERM (or Ctrl-C), then stop as _Uvicorn does, and return."""
    server.uvicorn.grace = grace
    server.uvicorn.config.timeout_graceful_shutdown = grace + 10
    # uvicorn raises the signal it stopped on again once it has stopped, under the handler found before it
    # started: this one, so that the process exits 0 rather than being killed by its own SIGTERM
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server.serve_forever()


def api_key_from_env(name: str = API_KEY_ENV) -> str | None:
    return os.environ.get(name) or None
