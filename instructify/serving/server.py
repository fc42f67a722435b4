"""`instructify serve`'s process: uvicorn (HTTP/1.1 keep-alive) serving the API on a socket bound up front, the
engine behind it, and the stop on SIGTERM: no new connections, the admitted requests finish for up to the grace
period, the rest end with a 503, exit 0."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import threading

import uvicorn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
# Shapes each kernel cache of CPU bf16 matmuls keeps (oneDNN's primitive cache and ideep's LRU, 1,024 by default,
# ~0.27 MB a shape each): a server meets new shapes at almost every step (rows x cache length), so at the default
# the soak's memory climbed ~20 MB/min for minutes; at 64 it was flat after 45 s and no slower (docs/serving.md).
KERNEL_CACHE_SHAPES = 64
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
) -> Server:
    """The server, listening but not yet serving: call serve_forever (the tests run it in a thread)."""
    bound_kernel_caches()
    engine = Engine(model, tokenizer, max_batch, max_pending)
    app = make_app(
        engine,
        tokenizer,
        model_id,
        model_defaults(model),
        api_key=api_key,
        max_body=max_body,
        request_timeout=request_timeout,
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
