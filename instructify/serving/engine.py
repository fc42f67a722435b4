"""The serving engine: one thread owns the model and decodes all running requests together, one token per step
(continuous batching). A request that arrives joins the running batch at the next step (its prompt prefilled, its
own max_tokens, sampling settings and seed); a row that stops, reaches max_tokens or loses its client leaves it.

Why our own loop rather than `model.generate` or transformers' ContinuousBatchingManager: `generate` runs a fixed
batch to its end (a newcomer waits for the slowest row), and the manager has one sampling mode and seed for all
requests and no way to fail one row; this loop keeps a plain DynamicCache, padded on the left, and grows, merges
and shrinks it along the batch dimension between steps.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructify.evals.batching import KVBatch, choose, generator
from instructify.evals.generation import pad_id_of, stop_ids_of

log = logging.getLogger(__name__)

MAX_PENDING = 64  # requests waiting for a row; more get an immediate 429 with Retry-After
# A fast tokenizer used from several threads at once can fail with "Already borrowed" (it mutates its
# truncation/padding state while encoding): request threads encode, the generation thread decodes.
TOKENIZER_LOCK = threading.Lock()


class Overloaded(Exception):
    """More requests wait than --max-pending allows, or the server is stopping: answered `status` (429 or 503)
    with Retry-After (seconds)."""

    def __init__(self, message: str, retry_after: int, status: int = 429):
        super().__init__(message)
        self.retry_after, self.status = retry_after, status


@dataclass
class Job:
    prompt_ids: list[int]
    max_tokens: int
    sampling: tuple  # (do_sample, temperature, top_p)
    seed: int | None = None
    stop: tuple[str, ...] = ()  # strings that end the reply, not included in it (OpenAI's `stop`)
    # ("text", str) ... then ("end", reason, completion tokens), or ("error", message, HTTP status); anything with
    # a thread-safe put() (the API hands them to its event loop)
    events: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # the reply's tool-call grammar (instructify/evals/tool_grammar.py Matcher: feed(ids), mask_(scores)) or None
    matcher: object = None


@dataclass
class _Row:
    """A running request: what it generated and sent so far."""

    job: Job
    length: int  # its tokens in the cache (prompt and generated); the next token's position
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)
    sent: str = ""
    last: int = 0


class Engine:
    """Owns the model. submit() queues a Job (or raises Overloaded); its events queue gets its text as it comes.

    This is the request threads' side. The generation thread is a _Generation (below): it takes the jobs from
    `pending`, runs them in a KVBatch and writes the counters that /metrics and the tests read."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_batch: int = 8,
        max_pending: int = MAX_PENDING,
    ):
        self.max_batch, self.max_pending = max_batch, max_pending
        self.pending: queue.Queue[Job] = queue.Queue()
        self.admit_lock = threading.Lock()
        self.waiting = 0  # submitted, not yet running
        self.closing = False  # stopping: no new requests
        self.prefilling = 0  # taken from the queue, not yet in rows
        # what /metrics and the tests read
        self.recent: deque[tuple[str, int]] = deque(maxlen=1000)  # (finish reason, tokens) of the last jobs
        self.finished: deque[float] = deque(maxlen=1000)  # when they ended
        self.steps: deque[tuple[float, int]] = deque(maxlen=4096)  # (time, tokens made) of each step
        self.tokens_total = 0
        self.busiest = 0  # the most rows decoded in one step
        self.joined_running = 0  # requests that joined a batch already decoding
        self.generation = _Generation(self, model, tokenizer)
        self.thread = threading.Thread(target=self.generation.run, name="generate", daemon=True)
        self.thread.start()

    @property
    def rows(self) -> list[_Row]:
        """The running requests (the generation thread's batch)."""
        return self.generation.batch.rows

    def submit(self, job: Job) -> Job:
        with self.admit_lock:
            if self.closing:
                raise Overloaded("the server is shutting down; try another replica or later", 5, 503)
            if self.waiting >= self.max_pending:
                message = f"{self.waiting} requests are waiting (the server's --max-pending); try again later"
                raise Overloaded(message, self.retry_after())
            self.waiting += 1
        self.pending.put(job)
        return job

    def retry_after(self) -> int:
        """Seconds until the waiting requests are likely served, from the pace of the last minute's replies."""
        since = time.monotonic() - 60
        rate = sum(t > since for t in self.finished) / 60
        return int(min(60, max(1, self.waiting / rate))) if rate else 5

    def stats(self) -> dict:
        since = time.monotonic() - 10
        return {
            "waiting": self.waiting,
            "running": len(self.rows),
            "max_batch": self.max_batch,
            "max_pending": self.max_pending,
            "tokens_total": self.tokens_total,
            "tokens_per_s": round(sum(n for t, n in self.steps if t > since) / 10, 2),
        }

    def stop(self, grace: float) -> None:
        """Take no new requests, let the admitted ones finish for up to `grace` seconds, then end the rest
        with a 503."""
        with self.admit_lock:
            self.closing = True
        deadline = time.monotonic() + grace
        while (self.waiting or self.prefilling or self.rows) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.abort = True
        self.thread.join(timeout=5)

    abort = False


class _Generation:
    """The generation thread: it takes the waiting jobs that fit into the running batch (prefilled, then
    merged) and decodes the batch one token per step, until the engine aborts."""

    def __init__(self, engine: Engine, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
        self.engine, self.model = engine, model.eval()
        stop_ids = stop_ids_of(model)
        self.pad_id = pad_id_of(tokenizer, stop_ids)
        # top_k: what generate() would apply when sampling
        self.decoder = _Decoder(engine, tokenizer, stop_ids, model.generation_config.top_k)
        self.batch = KVBatch()

    def run(self) -> None:
        engine, decoder = self.engine, self.decoder
        while not engine.abort:
            try:
                self._admit()
                if self.batch.rows:
                    decoder.advance(self.batch, self.batch.step(self.model), first=0)
            except Exception as error:  # a failed step ends the running requests; the server goes on
                log.exception("generation failed")
                for row in self.batch.rows:
                    decoder.fail(row.job, f"generation failed: {type(error).__name__}: {error}")
                self.batch = KVBatch()
        for row in self.batch.rows:
            decoder.fail(row.job, "the server is shutting down", 503)
        for job in self._take(len(engine.pending.queue)):
            decoder.fail(job, "the server is shutting down", 503)

    def _take(self, n: int, block: bool = False) -> list[Job]:
        pending, jobs = self.engine.pending, []
        while len(jobs) < n:
            try:
                jobs.append(pending.get(timeout=0.2) if block and not jobs else pending.get_nowait())
            except queue.Empty:
                break
        with self.engine.admit_lock:
            self.engine.waiting -= len(jobs)
        return jobs

    def _admit(self) -> None:
        """Prefill the waiting requests that fit and merge them into the running batch."""
        engine = self.engine
        jobs = self._take(engine.max_batch - len(self.batch.rows), block=not self.batch.rows)
        ready = [j for j in jobs if not j.cancelled.is_set()]
        for _ in range(len(jobs) - len(ready)):  # their clients left while they waited: never generated
            self.decoder.record("cancelled", 0)
        if not ready:
            return
        if self.batch.rows:
            engine.joined_running += len(ready)
        engine.prefilling = len(ready)
        try:
            self._prefill(ready)
        finally:
            engine.prefilling = 0

    def _prefill(self, jobs: list[Job]) -> None:
        """Prefill the jobs together, merge them in and pick their first tokens; if that prefill fails, each job
        alone, so that only the one that fails fails."""
        groups = [jobs]
        while groups:
            group = groups.pop(0)
            try:
                with torch.no_grad():
                    rows = [_Row(j, len(j.prompt_ids), _generator(self.model.device, j)) for j in group]
                    new, logits = KVBatch.prefill(
                        self.model, self.pad_id, [j.prompt_ids for j in group], rows
                    )
            except Exception as error:  # these newcomers fail; the running batch goes on
                if len(group) > 1:
                    groups += [[job] for job in group]  # find the one that fails: each alone
                    continue
                log.exception("prefill failed")
                self.decoder.fail(group[0], f"generation failed: {type(error).__name__}: {error}")
                continue
            first = len(self.batch.rows)
            self.batch.merge(new)
            self.decoder.advance(self.batch, logits, first)


class _Decoder:
    """What the model's scores become: each row's next token and its new text, handed to its client; the end of
    the rows that are done, recorded in the engine's counters."""

    def __init__(self, engine: Engine, tokenizer: PreTrainedTokenizerBase, stop_ids, top_k: int | None):
        self.engine, self.tokenizer = engine, tokenizer
        self.stop_ids, self.top_k = stop_ids, top_k

    def advance(self, batch: KVBatch, logits: torch.Tensor, first: int) -> None:
        """Pick each row's next token from its logits (rows from `first` on), pass the text on, and drop the rows
        that are done."""
        engine = self.engine
        engine.busiest = max(engine.busiest, len(batch.rows))
        done: set[int] = set()
        made = 0
        for k, (row, scores) in enumerate(zip(batch.rows[first:], logits), start=first):
            if not torch.isfinite(scores).all():  # this row's numbers broke: it fails, the others go on
                self.fail(row.job, "generation failed: the model's scores for this request are not finite")
                done.add(k)
                continue
            if row.job.matcher is not None:
                row.job.matcher.feed(row.ids)
                row.job.matcher.mask_(scores)
            row.last = choose(scores, row.job.sampling, self.top_k, row.generator)
            row.ids.append(row.last)
            made += 1
            if self._emit(row):
                done.add(k)
        engine.steps.append((time.monotonic(), made))
        engine.tokens_total += made
        for k, row in enumerate(batch.rows):
            if k not in done and row.job.cancelled.is_set():
                self._end(row, "cancelled")
                done.add(k)
        if done:
            batch.keep([k for k in range(len(batch.rows)) if k not in done])

    def _emit(self, row: _Row) -> str | None:
        """Hand the row's new text to its client; its finish reason once it is done."""
        if row.last in self.stop_ids:
            return self._end(row, "stop")
        with TOKENIZER_LOCK:
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # hold back a partly decoded character
            cut, safe = _stop_cut(text, row.job.stop, len(row.sent))
            if cut is not None:
                return self._end(row, "stop", text[:cut])
            if text[len(row.sent) : safe]:
                row.job.events.put(("text", text[len(row.sent) : safe]))
            row.sent = text[:safe]
        if len(row.ids) >= row.job.max_tokens:
            return self._end(row, "length")
        return None

    def _end(self, row: _Row, reason: str, text: str | None = None) -> str:
        if text is None:
            with TOKENIZER_LOCK:
                text = self.tokenizer.decode(
                    [t for t in row.ids if t not in self.stop_ids], skip_special_tokens=True
                )
            cut, _ = _stop_cut(text, row.job.stop, len(row.sent))  # in text held back as a partial character
            if cut is not None:
                text, reason = text[:cut], "stop"
        if text[len(row.sent) :]:
            row.job.events.put(("text", text[len(row.sent) :]))
        row.job.events.put(("end", reason, len(row.ids)))
        self.record(reason, len(row.ids))
        return reason

    def fail(self, job: Job, message: str, status: int = 500) -> None:
        job.events.put(("error", message, status))
        self.record("error", 0)

    def record(self, reason: str, tokens: int) -> None:
        self.engine.recent.append((reason, tokens))
        self.engine.finished.append(time.monotonic())


def _stop_cut(text: str, stops: tuple[str, ...], sent: int) -> tuple[int | None, int]:
    """Where the first stop string in `text` begins (None: none yet), and how much of `text` may be sent: all but
    an end that could still grow into a stop string. Only text after the `sent` characters can be new."""
    if not stops:
        return None, len(text)
    longest = max(map(len, stops))
    start = max(0, sent - longest + 1)
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    if found:
        return min(found), min(found)
    held = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    return None, max(sent, len(text) - held)


def _generator(device: torch.device, job: Job) -> torch.Generator | None:
    return generator(device, job.sampling[0], job.seed)
