"""The chat API on a tiny model that has learnt to stop: the official openai client (plain and streaming), raw
HTTP for every bad request, bearer tokens, concurrent and abandoned requests."""

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify.chat import template
from instructify.chat.template import IM_END
from instructify.data import validate
from instructify.serving import request as request_lib
from instructify.serving import server as server_lib

HELLO = [{"role": "user", "content": "hi there how are you doing today"}]
F = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
LEARNT_REPLY = "im doing good thanks and you"  # what the tiny chat model learnt to answer (tests/conftest.py)
QUESTIONS = [
    "hi there how are you doing today",
    "what did you do this weekend",
    "do you have any plans for tonight",
    "have you seen any good movies lately",
]


@pytest.fixture(scope="module")
def loaded(chat_model):
    return AutoModelForCausalLM.from_pretrained(chat_model), AutoTokenizer.from_pretrained(chat_model)


def _start(loaded, **kwargs):
    model, tok = loaded
    server = server_lib.make_server(model, tok, "tiny-chat", port=0, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(loaded):
    s = _start(loaded)
    yield s
    s.shutdown()


def _client(server, key: str = "none") -> openai.OpenAI:
    host, port = server.server_address[:2]
    return openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key=key, max_retries=0, timeout=60)


def _post(server, body, raw: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    data = raw if raw is not None else json.dumps(body).encode()
    conn.request(
        "POST", "/v1/chat/completions", data, {"Content-Type": "application/json", **(headers or {})}
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def test_openai_client_gets_a_reply_that_stops(server, loaded):
    _, tok = loaded
    reply = _client(server).chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=32)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content == LEARNT_REPLY
    prompt = tok.apply_chat_template(HELLO, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert reply.usage.prompt_tokens == len(prompt["input_ids"])
    # the reply's tokens and the <|im_end|> that ended it
    assert reply.usage.completion_tokens == len(tok(LEARNT_REPLY, add_special_tokens=False)["input_ids"]) + 1
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert IM_END not in choice.message.content
    assert reply.model == "tiny-chat" and reply.id.startswith("chatcmpl-")


def test_max_tokens_cuts_with_finish_reason_length(server):
    reply = _client(server).chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=3)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3
    assert LEARNT_REPLY.startswith(reply.choices[0].message.content)


def test_streaming_gives_the_same_reply_chunk_by_chunk(server, loaded):
    _, tok = loaded
    chunks = list(
        _client(server).chat.completions.create(
            model="tiny-chat",
            messages=HELLO,
            max_tokens=32,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text == LEARNT_REPLY
    assert reasons[-1] == "stop" and set(reasons[:-1]) == {None}
    assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) > 3  # token by token
    usage = chunks[-1].usage  # the last chunk: usage only (stream_options.include_usage)
    assert not chunks[-1].choices and usage.prompt_tokens > 0
    assert usage.completion_tokens == len(tok(LEARNT_REPLY, add_special_tokens=False)["input_ids"]) + 1


@pytest.mark.parametrize("stop", ["thanks", ["zzz", "good th"], "d"])
def test_stop_strings_end_the_reply_before_them_whole_or_streamed(server, stop):
    """OpenAI's `stop`: the reply ends where a stop string begins, without it, finish_reason "stop"; a stream
    never sends the start of a stop string that then completes (here "good th" spans tokens)."""
    first = min(
        LEARNT_REPLY.find(s) for s in ([stop] if isinstance(stop, str) else stop) if s in LEARNT_REPLY
    )
    client = _client(server)
    reply = client.chat.completions.create(model="m", messages=HELLO, max_tokens=32, stop=stop)
    assert reply.choices[0].message.content == LEARNT_REPLY[:first]
    assert reply.choices[0].finish_reason == "stop"
    chunks = list(
        client.chat.completions.create(model="m", messages=HELLO, max_tokens=32, stop=stop, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == LEARNT_REPLY[:first]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_and_health(server):
    client = _client(server)
    assert [m.id for m in client.models.list().data] == ["tiny-chat"]
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", "/health")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "ok"


BAD = [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "hi <|im_end|> there"}]}, "messages[0].content"),
    (
        {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
        "messages[1].role",
    ),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "messages[1].role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": 100000}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": "ten"}, "max_tokens"),
    ({"messages": HELLO, "max_completion_tokens": -1}, "max_completion_tokens"),
    ({"messages": HELLO, "temperature": 5}, "temperature"),
    ({"messages": HELLO, "top_p": 0}, "top_p"),
    ({"messages": HELLO, "n": 2}, "n"),
    ({"messages": HELLO, "stream": "yes"}, "stream"),
    ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": HELLO, "stop": [""]}, "stop"),
    ({"messages": HELLO, "stop": 5}, "stop"),
    ({"messages": HELLO, "max_tokens": 1.5}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": "10"}, "max_tokens"),
    ({"messages": HELLO, "temperature": True}, "temperature"),
    ({"messages": HELLO, "stream": 1}, "stream"),
    ({"messages": HELLO, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"messages": HELLO, "tools": [{"type": "fn", "function": {"name": "f"}}]}, "tools[0].type"),
    ({"messages": HELLO, "tool_choice": "required"}, "tool_choice"),
    (
        {"messages": HELLO, "tools": [F], "tool_choice": {"type": "function", "function": {"name": "g"}}},
        "tool_choice",
    ),
    ({"messages": [*HELLO, {"role": "tool", "content": "5"}]}, "messages[1].role"),
    ({"messages": HELLO, "logprobs": True}, "logprobs"),
    ({"messages": HELLO, "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": HELLO, "frequency_penalty": 0.5}, "frequency_penalty"),
    ({"messages": [1]}, "messages[0]"),
    ([1, 2], None),
]


@pytest.mark.parametrize("body,param", BAD, ids=[str(p) for _, p in BAD])
def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_goes_on(server, body, param):
    status, payload = _post(server, body)
    assert status == 400, payload
    error = payload["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"] and (param is None or param.split("[")[0] in error["message"])
    status, payload = _post(server, {"messages": HELLO, "max_tokens": 4})  # still serving
    assert status == 200 and payload["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "messages",
    [
        [
            {"role": "user", "content": "hi"},
            {"role": "bot", "content": "yo"},
            {"role": "user", "content": "a"},
        ],
        [{"role": "user", "content": " "}],  # training data refuses empty content, and so does the API
        [{"role": "user", "content": "a <|im_end|>"}],
        [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
        [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        [{"role": "user"}],
    ],
)
def test_a_request_is_held_to_the_training_datas_rules(messages):
    """One validator (validate.check_messages): the message and field a request error names are the ones the training
    data's reason names."""
    found = validate.check_messages(messages, ("<|im_end|>",), prompt=True)
    with pytest.raises(request_lib.RequestError) as error:
        request_lib.check_request_messages(messages, ("<|im_end|>",))
    where = f"messages[{found.index}]"
    assert error.value.param == (f"{where}.{found.field}" if found.field else where)
    assert str(error.value) == f"{where} {found.reason}"


def test_text_parts_are_joined_before_the_rules_apply():
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert request_lib.check_request_messages([{"role": "user", "content": parts}], ()) == [
        {"role": "user", "content": "a\nb"}
    ]
    with pytest.raises(request_lib.RequestError, match="special-token text <|im_end|>"):
        request_lib.check_request_messages(
            [{"role": "user", "content": [{"type": "text", "text": "<|im_end|>"}]}], ("<|im_end|>",)
        )


def test_malformed_oversized_and_unknown(server):
    status, payload = _post(server, None, raw=b"{not json")
    assert status == 400 and "not valid JSON" in payload["error"]["message"]
    status, payload = _post(server, None, raw=b"x" * (server_lib.MAX_BODY_BYTES + 1))
    assert status == 413 and "limit" in payload["error"]["message"]
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", "/v1/nothing")
    assert conn.getresponse().status == 404


def test_bearer_token_required_when_set(loaded):
    server = _start(loaded, api_key="s3cret")
    try:
        with pytest.raises(openai.AuthenticationError):
            _client(server, "wrong").chat.completions.create(model="m", messages=HELLO, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            _client(server, "wrong").models.list()
        reply = _client(server, "s3cret").chat.completions.create(model="m", messages=HELLO, max_tokens=32)
        assert reply.choices[0].message.content == LEARNT_REPLY
        status, payload = _post(server, {"messages": HELLO})  # no header at all
        assert status == 401 and "s3cret" not in json.dumps(payload)
    finally:
        server.shutdown()


def test_concurrent_requests_get_their_own_replies(server):
    """Served together, joining the running batch as they come, each reply equals the one the same question
    gets alone; and they were batched (an engine that serves one request at a time fails here)."""
    client = _client(server)

    def ask(question):
        messages = [{"role": "user", "content": question}]
        reply = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=24)
        return reply.choices[0].message.content, reply.choices[0].finish_reason

    alone = [ask(q) for q in QUESTIONS]
    server.engine.busiest = server.engine.joined_running = 0
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, QUESTIONS * 3))
    assert together == alone * 3
    assert len({text for text, _ in alone}) == len(QUESTIONS)  # different questions, different replies
    assert server.engine.busiest >= 4  # decoded together
    assert server.engine.joined_running > 0  # some joined a batch already decoding


def _rambler(gemma_like):
    """The model has the ChatML tokens but no training, so it rambles on to max_tokens; slowed to a small real
    model's pace (~100 tokens/s for one row) so that a 400-token reply takes 4 s and more."""
    model, tok = AutoModelForCausalLM.from_pretrained(gemma_like), AutoTokenizer.from_pretrained(gemma_like)
    template.add_chat_tokens(model, tok)
    model.register_forward_pre_hook(lambda *_: time.sleep(0.01))
    return model, tok


def test_abandoned_streams_stop_and_do_not_block_others(gemma_like):
    """Clients that ask for long streams and hang up: their generation stops there, the next client is served
    at once."""
    server = _start(_rambler(gemma_like))
    try:
        body = json.dumps({"messages": HELLO, "max_tokens": 400, "stream": True}).encode()
        for _ in range(3):
            s = socket.create_connection(server.server_address[:2], timeout=10)
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            s.recv(64)  # the stream has started
            s.close()
        t0 = time.perf_counter()
        reply = _client(server).chat.completions.create(model="m", messages=HELLO, max_tokens=5)
        assert time.perf_counter() - t0 < 3.0  # not after the abandoned ones' 400 tokens (4 s and more)
        assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5
        for _ in range(
            600
        ):  # the abandoned ones end at the engine's next step after their client is seen gone
            if len(server.engine.recent) >= 4:
                break
            time.sleep(0.05)
        last = list(server.engine.recent)[-4:]  # the three abandoned and the reply above, in some order
        assert sorted(reason for reason, _ in last) == ["cancelled"] * 3 + ["length"]
        assert all(tokens < 400 for _, tokens in last), last  # generation stopped when the client left
    finally:
        server.shutdown()


def _burst(server, n: int, body: dict) -> tuple[list, float]:
    """n plain clients at once, no retries: each gets (status, headers, payload) or the exception it saw; also
    the slowest /health seen during the burst."""
    start = threading.Barrier(n + 1)

    def one(_):
        start.wait()
        try:
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=120)
            conn.request(
                "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            return response.status, response.headers, json.loads(response.read())
        except Exception as error:  # a reset or a timeout: no HTTP answer
            return error

    with ThreadPoolExecutor(n) as pool:
        answers = pool.map(one, range(n))
        start.wait()
        slowest = 0.0
        for _ in range(10):
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
            conn.request("GET", "/health")
            assert conn.getresponse().status == 200
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.05)
        return list(answers), slowest


def test_a_burst_gets_an_answer_each_and_429s_above_max_pending(loaded):
    """120 clients at once: every one gets an HTTP answer, a reply or an immediate 429 with Retry-After and an
    OpenAI-style error; /health answers fast meanwhile; /metrics counts both."""
    server = _start(loaded, max_batch=4, max_pending=16)
    try:
        answers, slowest_health = _burst(server, 120, {"messages": HELLO, "max_tokens": 16})
        errors = [a for a in answers if isinstance(a, Exception)]
        assert not errors, errors[:3]
        statuses = [status for status, _, _ in answers]
        # at least a full queue is admitted; how many more depends on how many rows started while the burst came
        # in (17 to 20 seen), which is timing
        assert set(statuses) == {200, 429} and statuses.count(200) >= 16
        for status, headers, payload in answers:
            if status == 429:
                assert int(headers["Retry-After"]) >= 1
                assert (
                    payload["error"]["type"] == "rate_limit_error"
                    and "--max-pending" in payload["error"]["message"]
                )
            else:
                assert (
                    payload["choices"][0]["message"]["content"]
                    == LEARNT_REPLY[: len(payload["choices"][0]["message"]["content"])]
                )
        assert slowest_health < 1.0
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        assert f'instructify_chat_responses_total{{status="429"}} {statuses.count(429)}' in metrics
        assert f'instructify_chat_responses_total{{status="200"}} {statuses.count(200)}' in metrics
        assert "instructify_requests_waiting 0" in metrics and "instructify_batch_running 0" in metrics
        tokens = int(metrics.split("\ninstructify_generated_tokens_total ")[1].split()[0])
        assert tokens == sum(p["usage"]["completion_tokens"] for s, _, p in answers if s == 200)
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def impatient(loaded):
    """A server that gives clients one second to send their request."""
    s = _start(loaded, request_timeout=1.0)
    yield s
    s.shutdown()


def _raw(server, data: bytes, then_wait: float = 10, half_close: bool = False) -> bytes:
    """Send raw bytes, then read until the server closes the connection (or then_wait passes)."""
    s = socket.create_connection(server.server_address[:2], timeout=then_wait)
    s.sendall(data)
    if half_close:
        s.shutdown(socket.SHUT_WR)
    received = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := s.recv(65536):
            received += chunk
    s.close()
    return received


def test_half_sent_headers_are_answered_408_and_closed(impatient):
    """Sixty slowloris connections: each gets a 408 within about the timeout; others are served meanwhile."""
    conns = []
    for _ in range(60):
        s = socket.create_connection(impatient.server_address[:2], timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nContent-Ty")
        conns.append(s)
    t0 = time.perf_counter()
    status, payload = _post(impatient, {"messages": HELLO, "max_tokens": 4})
    assert status == 200
    answers = [s.recv(4096) for s in conns]
    assert time.perf_counter() - t0 < 5
    assert all(a.startswith(b"HTTP/1.1 408") and b"headers did not arrive within 1 s" in a for a in answers)
    for s in conns:
        assert s.recv(10) == b""  # closed
        s.close()


def test_a_body_shorter_or_longer_than_its_content_length(impatient):
    """A body that stops short is answered 408 once the timeout passes and the connection closed; one whose client
    half-closes is dropped unanswered (nothing of it reaches the engine); bytes beyond the Content-Length are the
    next request, and a broken one."""
    body = json.dumps({"messages": HELLO, "max_tokens": 4}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
    )
    before = len(impatient.engine.recent)
    stalled = _raw(impatient, head + b"%d\r\n\r\n" % (len(body) + 100) + body)  # and then nothing
    assert stalled.startswith(b"HTTP/1.1 408") and b"body did not arrive within 1 s" in stalled
    assert b"connection: close" in stalled.lower()
    ended = _raw(impatient, head + b"%d\r\n\r\n" % (len(body) + 100) + body, half_close=True)
    assert ended == b""
    longer = _raw(impatient, head + b"%d\r\n\r\n" % (len(body) - 5) + body)
    assert longer.startswith(b"HTTP/1.1 400") and b"not valid JSON" in longer
    assert len(impatient.engine.recent) == before  # none of them was generated
    assert _post(impatient, {"messages": HELLO, "max_tokens": 4})[0] == 200


ODD = [
    (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', "not valid JSON"),  # Latin-1, not UTF-8
    (b"\xff\xfe{}", "not valid JSON"),
    (b'"a string"', "must be a JSON object"),
    (b"3", "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"messages": ' + b"[" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(
    "raw,message", ODD, ids=["latin-1", "bom-ish", "string", "number", "null", "deep", "deep2"]
)
def test_odd_bodies_get_a_400(server, raw, message):
    status, payload = _post(server, None, raw=raw)
    assert status == 400 and message in payload["error"]["message"], payload


def test_content_as_text_parts_is_joined_and_other_parts_are_refused(server):
    parts = [{"type": "text", "text": "hi there how are you"}, {"type": "text", "text": "doing today"}]
    status, payload = _post(server, {"messages": [{"role": "user", "content": parts}], "max_tokens": 32})
    assert status == 200
    joined = [{"role": "user", "content": "hi there how are you\ndoing today"}]
    status, alone = _post(server, {"messages": joined, "max_tokens": 32})
    assert payload["choices"][0]["message"] == alone["choices"][0]["message"]
    assert payload["usage"] == alone["usage"]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    status, payload = _post(server, {"messages": [{"role": "user", "content": [parts[0], image]}]})
    assert status == 400 and payload["error"]["param"] == "messages[0].content"
    assert "'image_url'" in payload["error"]["message"] and "content[1]" in payload["error"]["message"]


def test_a_stream_nobody_reads_is_timed_out_and_its_row_freed(gemma_like):
    """A client that asks for a long stream and stops reading (its socket still open): once our writes have been
    blocked for the timeout, its row is cancelled rather than generating on to max_tokens."""
    server = _start(_rambler(gemma_like), request_timeout=0.5)
    try:
        body = json.dumps({"messages": HELLO, "max_tokens": 400, "stream": True}).encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        s.connect(server.server_address[:2])
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body)
            + body
        )
        for _ in range(600):  # and never read
            if server.engine.recent:
                break
            time.sleep(0.05)
        s.close()
        [(reason, tokens)] = list(server.engine.recent)
        assert reason == "cancelled" and tokens < 400
    finally:
        server.shutdown()


def _stream_lines(server, body: dict) -> tuple[socket.socket, object]:
    s = socket.create_connection(server.server_address[:2], timeout=30)
    data = json.dumps(body | {"stream": True}).encode()
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(data)
        + data
    )
    return s, s.makefile("rb")


def test_a_short_request_joins_a_running_long_one(gemma_like):
    """Continuous batching: a short request sent while a long one streams is prefilled into the running batch,
    finishes long before it, and gets the same reply it gets alone."""
    server = _start(_rambler(gemma_like))
    try:
        short = {"messages": [{"role": "user", "content": "what did you do this weekend"}], "max_tokens": 8}
        _, alone = _post(server, short)
        s, lines = _stream_lines(server, {"messages": HELLO, "max_tokens": 400})
        while not lines.readline().startswith(b"data: {"):  # the long one is decoding
            pass
        status, joined = _post(server, short)
        assert status == 200
        assert server.engine.rows and server.engine.rows[0].job.max_tokens == 400  # still running
        assert joined["choices"][0]["message"] == alone["choices"][0]["message"]
        assert server.engine.joined_running == 1
        tail = b"".join(iter(lines.readline, b""))
        assert b'"finish_reason": "length"' in tail and tail.endswith(b"data: [DONE]\n\n")
        s.close()
    finally:
        server.shutdown()


def test_a_row_whose_scores_break_fails_alone_and_the_server_goes_on(loaded):
    """A NaN in one request's scores (here: any prompt holding the token of 'zz'): that request gets a 500, the
    ones generated in the same batch their usual reply, and the server keeps serving."""
    model, tok = loaded
    poison = tok("zz", add_special_tokens=False)["input_ids"][0]

    def nan_rows(module, args, kwargs, output):
        rows = (kwargs["input_ids"] == poison).any(-1)
        output.logits[rows] = float("nan")
        return output

    hook = model.register_forward_hook(nan_rows, with_kwargs=True)
    server = _start(loaded)
    try:
        bodies = [{"messages": HELLO, "max_tokens": 32}] * 3 + [
            {"messages": [{"role": "user", "content": "zz zz"}], "max_tokens": 32}
        ]
        server.engine.busiest = 0
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda b: _post(server, b), bodies))
        assert server.engine.busiest >= 2
        assert [status for status, _ in answers] == [200, 200, 200, 500]
        assert all(p["choices"][0]["message"]["content"] == LEARNT_REPLY for _, p in answers[:3])
        error = answers[3][1]["error"]
        assert error["type"] == "server_error" and "not finite" in error["message"]
        status, payload = _post(server, {"messages": HELLO, "max_tokens": 32})
        assert status == 200 and payload["choices"][0]["message"]["content"] == LEARNT_REPLY
    finally:
        hook.remove()
        server.shutdown()


def test_stopping_ends_what_outlives_the_grace_period_with_a_503(gemma_like):
    server = _start(_rambler(gemma_like))
    try:
        s, lines = _stream_lines(server, {"messages": HELLO, "max_tokens": 400})
        lines.readline()
        server.engine.stop(grace=0.2)
        tail = b"".join(iter(lines.readline, b""))
        assert b"shutting down" in tail and tail.endswith(b"data: [DONE]\n\n")
        status, payload = _post(server, {"messages": HELLO, "max_tokens": 4})
        assert status == 503 and "shutting down" in payload["error"]["message"]
        s.close()
    finally:
        server.shutdown()


def test_sigterm_finishes_the_running_requests_and_exits_0(gemma_like, tmp_path):
    """`instructify serve` under SIGTERM: the long stream under way completes, new connections are refused,
    the process exits 0 within its grace period."""
    model, tok = AutoModelForCausalLM.from_pretrained(gemma_like), AutoTokenizer.from_pretrained(gemma_like)
    template.add_chat_tokens(model, tok)  # untrained: it rambles to max_tokens
    rows = model.get_input_embeddings().weight.data  # doctor wants the ChatML rows set: some others, negated
    for k, token in enumerate(("<|im_start|>", "<|im_end|>")):  # (on this seeded model it then never stops)
        rows[tok.convert_tokens_to_ids(token)] = -rows[10 + k]
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "instructify",
        "serve",
        "--model",
        str(tmp_path / "model"),
        "--port",
        str(port),
    ]
    cmd += ["--grace", "20", "model.dtype=float32"]  # bf16 on a CPU is slow on each new shape the first time
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(1200):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.1)
        server = types.SimpleNamespace(server_address=("127.0.0.1", port))
        s, lines = _stream_lines(server, {"messages": HELLO, "max_tokens": 400})
        assert lines.readline().startswith(b"HTTP/1.1 200")
        while not lines.readline().startswith(b'data: {"id"'):  # decoding
            pass
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        tail = b"".join(iter(lines.readline, b""))
        assert b'"finish_reason": "length"' in tail and tail.endswith(b"data: [DONE]\n\n")
        assert proc.wait(timeout=30) == 0, proc.stdout.read().decode()
        assert time.perf_counter() - t0 < 20  # within the grace period (a loaded CI machine took 10.7 s here)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_seed_makes_a_sampled_reply_repeatable_alone_or_batched(server):
    """Each row samples from its own generator: the same seed gives the same reply, whatever else runs with it."""
    sampled = lambda seed: {"messages": HELLO, "max_tokens": 12, "temperature": 2.0, "seed": seed}
    alone = [_post(server, sampled(seed))[1]["choices"][0]["message"]["content"] for seed in range(4)]
    assert len(set(alone)) > 1  # it does sample
    bodies = [sampled(seed) for seed in range(4)] + [{"messages": HELLO, "max_tokens": 12}] * 4
    server.engine.busiest = 0
    with ThreadPoolExecutor(8) as pool:
        together = [
            p["choices"][0]["message"]["content"] for _, p in pool.map(lambda b: _post(server, b), bodies)
        ]
    assert server.engine.busiest >= 2
    assert together[:4] == alone and set(together[4:]) == {LEARNT_REPLY[: len(together[4])]}


# Requests of 420 prompt lengths straight into a fresh server's engine (a new process: the kernel caches are sized
# at its first bf16 matmul); prints its resident MB after the first 60 lengths, 240 and 420.
NEW_SHAPES = """
import os, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from instructify.serving import server as server_lib
from instructify.serving.engine import Job

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
engine = server_lib.make_server(model, tokenizer, "m", port=0, max_batch=4, max_pending=1000).engine
for lengths in (range(1, 61), range(61, 241), range(241, 421)):
    jobs = [engine.submit(Job([5] * n, 2, (False, 1.0, 1.0))) for n in lengths]
    for job in jobs:
        while job.events.get()[0] == "text":
            pass
    print(rss_mb(), flush=True)
engine.stop(0)
os._exit(0)  # no interpreter teardown under the server's daemon threads (it aborted there once in 3 runs)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_stays_flat_as_requests_bring_new_shapes(gemma_like):
    """The 5-minute soak in small (scripts/soak_serve.py): each new prompt length or batch is a new bf16 matmul
    shape, whose kernels CPU torch caches; with the server's caps, 180 new lengths after warm-up add a few MB
    (measured +1 to +20 MB in 19 runs; uncapped +150 MB)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
    }
    run = subprocess.run(
        [sys.executable, "-c", NEW_SHAPES, str(gemma_like)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    warm, middle, last = map(float, run.stdout.split())
    assert last - middle < 50, f"resident memory grew {last - middle:.0f} MB over 180 new prompt lengths"


def test_one_kept_alive_connection_carries_many_requests_and_a_stream(server):
    """HTTP/1.1 keep-alive: plain requests and streams reuse one TCP connection, with http.client and with the
    openai client (which closes a stream's connection itself at [DONE], so the stream comes last there)."""
    state = server.uvicorn.server_state
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    before, sockets = state.total_requests, set()
    for stream in (False, True, False):
        body = json.dumps({"messages": HELLO, "max_tokens": 32, "stream": stream})
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and not response.will_close
        assert (b"data: [DONE]" in response.read()) == stream
        sockets.add(id(conn.sock))
    assert len(sockets) == 1 and state.total_requests - before == 3
    import httpx

    streams = []  # the network stream each answer came over
    hook = {"response": [lambda r: streams.append(r.extensions["network_stream"])]}
    with httpx.Client(event_hooks=hook) as http_client:
        host, port = server.server_address[:2]
        client = openai.OpenAI(
            base_url=f"http://{host}:{port}/v1", api_key="x", max_retries=0, http_client=http_client
        )
        for _ in range(2):
            assert client.chat.completions.create(model="m", messages=HELLO, max_tokens=32).choices
        chunks = client.chat.completions.create(model="m", messages=HELLO, max_tokens=32, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == LEARNT_REPLY
    assert len(streams) == 3 and len({id(s) for s in streams}) == 1


def test_a_client_that_leaves_a_whole_reply_frees_its_row(gemma_like):
    """Not streaming, the client hangs up while its long reply is generated: the row stops within about a second
    (the API checks for the disconnect while it waits), not at max_tokens."""
    server = _start(_rambler(gemma_like))
    try:
        body = json.dumps({"messages": HELLO, "max_tokens": 400}).encode()
        s = socket.create_connection(server.server_address[:2], timeout=10)
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        while not server.engine.rows:
            time.sleep(0.01)
        s.close()
        for _ in range(600):
            if server.engine.recent:
                break
            time.sleep(0.05)
        [(reason, tokens)] = list(server.engine.recent)
        assert reason == "cancelled" and tokens < 300
    finally:
        server.shutdown()


def test_a_body_that_is_not_sent_as_json_gets_a_415(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request(
        "POST", "/v1/chat/completions", json.dumps({"messages": HELLO}), {"Content-Type": "text/plain"}
    )
    response = conn.getresponse()
    assert response.status == 415 and b"Content-Type: application/json" in response.read()


def test_the_schema_and_its_docs_are_served(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", "/openapi.json")
    spec = json.loads(conn.getresponse().read())
    operation = spec["paths"]["/v1/chat/completions"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "413", "429", "503"}
    assert "422" not in operation["responses"]  # schema violations are 400s, as OpenAI's
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    request = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"messages", "max_tokens", "temperature", "top_p", "stop", "seed", "stream"} <= set(request)
    conn.request("GET", "/docs")
    response = conn.getresponse()
    assert response.status == 200 and b"swagger" in response.read().lower()


# Checks schemathesis leaves out: positive_data_acceptance (a request the schema allows may still break the
# conversation rules: turns out of order, special-token text, too long for the context); the rest are about
# resources, auth schemes and objects this API does not have.
NOT_CHECKED = "positive_data_acceptance,use_after_free,ensure_resource_availability,ignored_auth,object_level_authorization"


def test_schemathesis_finds_no_5xx_and_no_answer_off_the_schema(server, tmp_path):
    """A bounded run of schemathesis from the served /openapi.json (a few hundred generated requests, valid and
    not): no 5xx, every answer's status, content type, headers and body (each streamed event too) as the schema
    says, and every request the schema excludes refused."""
    host, port = server.server_address[:2]
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"http://{host}:{port}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            NOT_CHECKED,
            "--max-examples",
            "60",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-6000:]
    summary = run.stdout[run.stdout.rindex("Test cases:") :]
    generated = int(summary.split()[2])
    assert generated >= 200, summary
