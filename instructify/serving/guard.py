"""What stands between the socket and the routes: a deadline for a request's headers (uvicorn has none: a client
that sends its headers a byte a minute would hold a connection for good), bearer tokens, the body's size, deadline
and JSON, a deadline for each write of a reply, and the count of answers by status that /metrics shows.

Why this is ours: uvicorn and Starlette have no header or body deadline, no body limit and no write deadline, and
FastAPI answers an over-deep or non-UTF-8 body with a message that names neither."""

from __future__ import annotations

import hmac
import json
import logging
import socket
from collections.abc import Awaitable, Callable

import anyio
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

API_KEY_ENV = "INSTRUCTIFY_API_KEY"
# Bytes the kernel (which doubles it) and asyncio hold for a reply before a write waits: small, so that a client
# that stops reading a stream stalls our writes within ~150 chunks, and the write deadline frees its row.
SEND_BUFFER, WRITE_BUFFER = 8192, 4096


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    kind = {401: "authentication_error", 404: "not_found_error", 408: "timeout", 429: "rate_limit_error"}
    kind = kind.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


def protocol(request_timeout: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request's headers and small send buffers."""

    class Protocol(H11Protocol):
        _due = None  # the pending 408, while a request's headers are awaited
        _seen = None  # the request cycle whose headers arrived last

        def connection_made(self, transport):
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            transport.set_write_buffer_limits(high=WRITE_BUFFER)
            self._due = self.loop.call_later(request_timeout, self._headers_late)

        def data_received(self, data: bytes) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if self._due is None and idle:  # the first bytes of the next request on a kept-alive connection
                self._due = self.loop.call_later(request_timeout, self._headers_late)
            super().data_received(data)
            if self.cycle is not None and self.cycle is not self._seen:  # its headers are in
                self._seen = self.cycle
                self._cancel_due()

        def connection_lost(self, exc):
            self._cancel_due()
            super().connection_lost(exc)

        def _cancel_due(self):
            if self._due is not None:
                self._due.cancel()
                self._due = None

        def _headers_late(self):
            self._due = None
            if self.transport.is_closing():
                return
            body = error_body(408, f"the request's headers did not arrive within {request_timeout:g} s")
            head = f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
            # raw bytes: h11 has no request to answer yet
            self.transport.write(f"{head}\r\nconnection: close\r\n\r\n".encode() + body)
            self.transport.close()

    return Protocol


class ClientStalled(Exception):
    """The client did not take a write of its reply within the deadline."""


class Guard:
    """ASGI middleware in front of the app: bearer token on /v1 paths, request body read in full within the
    deadline and the size limit and checked to be a JSON object, each write of the reply within the deadline,
    answers to chat completions counted by status."""

    def __init__(
        self, app, *, body_paths: set[str], api_key: str | None, max_body: int, request_timeout: float
    ):
        self.app, self.api_key, self.max_body, self.timeout = app, api_key, max_body, request_timeout
        self.body_paths = (
            body_paths  # POST routes that take a JSON body; other methods and paths: the app's 404/405
        )
        self.statuses: dict[int, int] = {}  # chat completion requests answered, by HTTP status

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counted = scope["method"] == "POST" and scope["path"] == "/v1/chat/completions"
        send = self._timed(send, counted)
        headers = dict(scope["headers"])
        try:
            refusal = self._unauthorized(scope["path"], headers)
            if refusal is None and scope["method"] == "POST" and scope["path"] in self.body_paths:
                refusal, receive = await self._read_body(headers, receive)
            if refusal is not None:
                return await _answer(send, *refusal)
            await self.app(scope, receive, send)
        except ClientStalled:  # its row, if any, is cancelled where the reply was being written
            log.info("%s stopped reading its reply for %g s: closing", _client(scope), self.timeout)

    def _timed(self, send, counted: bool) -> Callable[[dict], Awaitable[None]]:
        async def timed(message: dict) -> None:
            if counted and message["type"] == "http.response.start":
                self.statuses[message["status"]] = self.statuses.get(message["status"], 0) + 1
            with anyio.move_on_after(self.timeout) as scope:
                await send(message)
            if scope.cancelled_caught:
                raise ClientStalled

        return timed

    def _unauthorized(self, path: str, headers: dict) -> tuple | None:
        if not self.api_key or not path.startswith("/v1/"):
            return None
        given = headers.get(b"authorization", b"")
        if hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):  # constant time: no timing oracle
            return None
        return 401, f"missing or wrong bearer token (the server's {API_KEY_ENV})"

    async def _read_body(self, headers: dict, receive) -> tuple[tuple | None, Callable]:
        """(refusal or None, a receive that replays the body): the whole body, within the limit and deadline."""
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return (413, f"the body is {int(length)} bytes; the limit is {self.max_body}"), receive
        chunks, size, more = [], 0, True
        with anyio.move_on_after(self.timeout) as deadline:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return (400, "the client left before its body arrived"), receive
                chunks.append(message.get("body", b""))
                size, more = size + len(chunks[-1]), message.get("more_body", False)
                if size > self.max_body:
                    return (413, f"the body is over the limit of {self.max_body} bytes"), receive
        if deadline.cancelled_caught:
            return (408, f"the request's body did not arrive within {self.timeout:g} s", True), receive
        if not _is_json(
            headers
        ):  # as FastAPI's strict content type: no JSON from a browser's plain form post
            return (415, "the body must be JSON, sent with Content-Type: application/json"), receive
        body = b"".join(chunks)
        problem = _json_problem(body)
        if problem:
            return (400, problem), receive
        return None, _replay(body, receive)


def _is_json(headers: dict) -> bool:
    kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


def _json_problem(body: bytes) -> str | None:
    """Why the body is not a JSON object, in words that say what is wrong; None if it is one."""
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        return f"the body is not valid JSON: not UTF-8 ({e.reason} at byte {e.start})"
    except json.JSONDecodeError as e:
        return f"the body is not valid JSON: {e}"
    except RecursionError:
        return "the body is JSON nested too deeply"
    return None if isinstance(value, dict) else "the body must be a JSON object"


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then the disconnect, when it comes

    return replay


async def _answer(send, status: int, message: str, close: bool = False) -> None:
    body = error_body(status, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the request may never come: the connection cannot carry another one
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _client(scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "a client"
