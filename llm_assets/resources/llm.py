"""`LLMResource`: the transport to an LLM. A request in, an answer out; nothing about cases.

- `server`: an OpenAI-compatible server (vLLM) over async httpx (the `openai` SDK measured 0.03 to
  0.06 of the capacity ratio slower, see `_ServerSession._post`). Every request carries its JSON schema
  as `response_format`.
- `offline`: in-process `vllm.LLM.chat` with `StructuredOutputsParams`, for large backfills on a
  GPU node; requests sent together are answered by one engine call (vLLM is imported lazily: it
  is only in the `gpu` extra).
- no base URL and backend not `offline` (or `backend="local"`): not configured. `configured` is
  False and `resolved_backend()` is `none`; the enrichment domain then uses its local strategy.

Against a slow or saturated server the transport backs off instead of failing:
- a request with no answer after `request_timeout_s` is checked on, not abandoned: `/health`
  answers, so it waits in the server's queue and keeps its place (abandoning it would throw the
  server's work away); `/health` fails, so the server is down: the request is abandoned. The
  connect timeout is short (a server that does not accept is down), the read timeout long
  (`overload_patience_s`);
- concurrency is adaptive per model (AIMD): cut on an overload signal (429, 503, or a request
  past `request_timeout_s` on a healthy server) at most once per round of requests, never above
  what the server answers within `request_timeout_s`; grown by about one per round of answers;
  between `min_concurrency` and `max_concurrency`;
- overload is retried with jittered backoff for up to `overload_patience_s`; hard failures (5xx,
  dropped connections, a dead server) with exponential full-jitter backoff up to `max_retries`;
- the circuit breaker opens for a server that is down (connection refused or `/health` failing,
  or `breaker_failure_threshold` 5xx answers in a row), never for a slow one. Each session starts
  with a `/health` probe, so a dead server costs one probe instead of a burst of requests, and a
  half-open breaker probes `/health` before letting a request through.

`complete` returns exactly one `LLMAnswer` per request, in order, and never raises for a request:
a request that cannot be answered comes back with an `error_kind`. This module imports nothing
from the domain packages: prompts, parsing, re-asking and versions belong to `enrichment`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Coroutine, Sequence, TypeVar

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKENDS = ("server", "offline", "local")  # accepted values of `backend`; `local` means no LLM
NOT_CONFIGURED = "none"
SHARD_CONNECTIONS = 8  # connections per httpx pool (see `_ServerSession.__init__`)
_JSON_HEADERS = {"Content-Type": "application/json"}

# Why a request got no answer.
ERROR_KINDS = (
    "timeout",        # no answer within request_timeout_s (after retries, or overload patience)
    "http_5xx",       # the server failed, or stayed overloaded (503) past the patience
    "http_429",       # the server shed load past the patience
    "http_4xx",       # the request was rejected (bad schema, auth): not retried
    "connect",        # the server could not be reached, or dropped the connection (after retries)
    "circuit_open",   # the breaker was open: failed fast, nothing sent
    "backend_error",  # the offline engine raised for the batch, or the client failed unexpectedly
)


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion to ask for. `json_schema` constrains decoding when set."""

    messages: list[dict]
    json_schema: dict | None = None
    schema_name: str = "answer"
    max_tokens: int | None = 512
    temperature: float | None = 0.0
    model: str | None = None  # None: the resource's model

    def response_format(self) -> dict | None:
        """The OpenAI / vLLM `response_format` for `json_schema` (strict)."""
        if self.json_schema is None:
            return None
        return {"type": "json_schema",
                "json_schema": {"name": self.schema_name, "schema": self.json_schema, "strict": True}}


@dataclass(frozen=True)
class LLMAnswer:
    """The answer to one request, or why there is none (`error_kind`), and what it cost."""

    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # time on the wire over all attempts (backoff excluded)
    attempts: int = 0       # requests sent, retries included
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None


class LLMServerUnavailable(RuntimeError):
    """The configured LLM server cannot serve: raised at resource setup, naming the URL."""


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures, or at once on `trip` (server down).

    While open, callers fail fast. After `reset_s` it half-opens: exactly one probe is let
    through; its success closes the breaker, its failure opens it again for another `reset_s`.
    No Dagster, no I/O.
    """

    def __init__(self, failure_threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic):
        self.failure_threshold = max(1, failure_threshold)
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self.times_opened = 0
        self.reason = ""

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._probe_in_flight or self._clock() - self._opened_at >= self.reset_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a request be sent now? In half-open state only the single probe may."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._probe_in_flight = 0, None, False

    def record_failure(self, reason: str = "") -> None:
        with self._lock:
            self._failures += 1
            if self._probe_in_flight or (self._opened_at is None and self._failures >= self.failure_threshold):
                self._open(reason or f"{self._failures} failures in a row")

    def trip(self, reason: str) -> None:
        """Open now: the server is down (refused, or its health check fails)."""
        with self._lock:
            self._failures += 1
            if self._opened_at is None or self._probe_in_flight:
                self._open(reason)

    def _open(self, reason: str) -> None:
        reopened = self._probe_in_flight
        self._opened_at, self._probe_in_flight = self._clock(), False
        self.times_opened += 1
        self.reason = reason
        log.warning("LLM circuit breaker %s: %s", "re-opened" if reopened else "opened", reason)


def full_jitter_backoff(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """AWS-style full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return (rng or random).uniform(0.0, min(cap_s, base_s * (2 ** min(attempt, 30))))


class AdaptiveConcurrency:
    """AIMD limit on requests in flight to one model (thread-safe numbers, no waiting).

    `on_success` adds 1/limit (about +1 per round of answers); `on_overload` multiplies by
    `decrease` once per round: only a request sent under the current `epoch` may cut, so a burst
    of timeouts from one over-full round cuts once, not down to the floor.

    Once the server has been overloaded, the limit also stays within what it answers in time:
    a request queued behind L others waits about L / X (X: answers per second over the last
    `window_s`, the read timeout), so more than `headroom * X * window_s` in flight would time out
    in the queue. That turns several halvings and their wasted timeouts into one step.
    """

    def __init__(self, max_limit: int, min_limit: int = 1, decrease: float = 0.5, window_s: float | None = None,
                 headroom: float = 0.8, clock: Callable[[], float] = time.monotonic):
        self.max_limit = max(1, max_limit)
        self.min_limit = max(1, min(min_limit, self.max_limit))
        self.decrease = decrease
        self.window_s = window_s
        self.headroom = headroom
        self._clock = clock
        self._lock = threading.Lock()
        self._limit = float(self.max_limit)
        self._answers: deque[float] = deque()
        self._first_answer: float | None = None
        self._overloaded = False
        self.epoch = 0
        self.cuts = 0

    @property
    def current(self) -> int:
        with self._lock:
            return max(self.min_limit, int(self._limit))

    def _answered_in_time(self, now: float) -> float | None:
        """Most requests in flight that the recent answer rate serves within `window_s` (None: unknown)."""
        if self.window_s is None or self._first_answer is None:
            return None
        while self._answers and self._answers[0] < now - self.window_s:
            self._answers.popleft()
        observed = min(self.window_s, now - self._first_answer)
        if observed < self.window_s / 2 or len(self._answers) < 2:
            return None
        return self.headroom * len(self._answers) / observed * self.window_s

    def on_success(self) -> None:
        with self._lock:
            now = self._clock()
            self._first_answer = self._first_answer if self._first_answer is not None else now
            self._answers.append(now)
            grown = min(float(self.max_limit), self._limit + 1.0 / self._limit)
            in_time = self._answered_in_time(now) if self._overloaded else None
            if in_time is not None:
                grown = min(grown, max(self._limit, in_time))  # grow, but not past what is answered in time
            self._limit = grown

    def on_overload(self, epoch: int) -> bool:
        """Cut the limit when `epoch` (the sender's) is current; True when it cut."""
        with self._lock:
            if epoch != self.epoch:
                return False
            self._overloaded = True
            cut = self._limit * self.decrease
            in_time = self._answered_in_time(self._clock())
            if in_time is not None:
                cut = min(cut, in_time)
            self._limit = max(float(self.min_limit), cut)
            self.epoch += 1
            self.cuts += 1
            return True


class _Gate:
    """Admits requests while fewer than the adaptive limit are in flight, first come first served.

    Bound to one event loop (a session); the limit it reads is shared across sessions.
    """

    def __init__(self, limit: AdaptiveConcurrency):
        self.limit = limit
        self.in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()

    async def acquire(self) -> None:
        if not self._waiters and self.in_flight < self.limit.current:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the slot is counted for us by whoever woke us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        limit = self.limit.current
        while self._waiters and self.in_flight < limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


@dataclass
class _Health:
    """The latest `/health` observation: when the probe started, and what it said."""

    ok: bool
    started_at: float
    detail: str = ""


def run_blocking(coro: Coroutine[object, object, T]) -> T:
    """Run `coro` on a fresh event loop, also when the caller already runs one (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="llm-transport-loop")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


@dataclass
class _Waiting:
    """A request on the wire: when it was sent, under which limit epoch, when last checked on."""

    sent_at: float
    epoch: int
    limit: AdaptiveConcurrency
    checked_at: float


class _HTTPStatus(Exception):
    """The server answered a chat request with an error status."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"{response.status_code}: {response.text[:200]}")
        self.status = response.status_code
        try:
            self.retry_after_s: float | None = float(response.headers["Retry-After"])
        except (KeyError, ValueError):
            self.retry_after_s = None


class _ServerSession:
    """Requests to the OpenAI-compatible server over httpx connection pools, on one event loop."""

    def __init__(self, owner: "LLMResource"):
        self.owner = owner
        self.model = owner.model_id()
        self.root = owner.root_url()
        self._gates: dict[str, _Gate] = {}
        self._probe: tuple[float, asyncio.Task] | None = None
        self._waiting: dict[asyncio.Task, _Waiting] = {}  # requests on the wire, for the watchdog
        self._abandoned: set[asyncio.Task] = set()
        self._watchdog: asyncio.Task | None = None
        # The read timeout is the overload patience: before it, a slow answer is checked on (see
        # `_watchdog_loop`), not abandoned; abandoning it would throw away the server's work.
        timeout = httpx.Timeout(owner.overload_patience_s, connect=owner.connect_timeout_s)
        # Several small pools, each request on the least busy: httpcore 1.0 rescans every pooled
        # connection on each request and release (encode/httpx#3215), so one pool of 32 costs a
        # third of the throughput at 32 in flight; pools of SHARD_CONNECTIONS keep the scan short.
        total = max(1, owner.max_concurrency)
        sizes = [min(SHARD_CONNECTIONS, total - start) for start in range(0, total, SHARD_CONNECTIONS)]
        tls = owner.tls_context()
        headers = {**_JSON_HEADERS, **owner.auth_headers()}
        self.clients = [httpx.AsyncClient(base_url=self.root, headers=headers, timeout=timeout, verify=tls,
                                          limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
                        for n in sizes]
        self._free = list(sizes)
        self._probe_http = httpx.AsyncClient(timeout=httpx.Timeout(owner.health_timeout_s), verify=tls)

    async def __aenter__(self) -> "_ServerSession":
        # One probe before the batch: a dead server costs this GET, not a burst of refused requests.
        if not await self._healthy(since=time.monotonic()):
            self.owner.breaker.trip(self._down_reason())
        elif self.owner.breaker.state != "closed":
            self.owner.breaker.record_success()
        return self

    async def __aexit__(self, *exc) -> None:
        for task in (self._probe[1] if self._probe else None, self._watchdog):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(c.aclose() for c in self.clients))
        await self._probe_http.aclose()

    # -- health ----------------------------------------------------------------------------------
    def _down_reason(self) -> str:
        health = self.owner._health
        return f"LLM server at {self.root} is down ({health.detail if health else 'no health check yet'})"

    async def _healthy(self, since: float) -> bool:
        """Is the server up, as seen by a `/health` probe that started at or after `since`?

        Concurrent callers share one probe; a probe already answered after `since` is reused.
        """
        health = self.owner._health
        if health is not None and health.started_at >= since:
            return health.ok
        if self._probe is None or self._probe[0] < since or (
                self._probe[1].done() and self._probe[1].cancelled()):
            started = time.monotonic()
            self._probe = (started, asyncio.ensure_future(self._probe_once(started)))
        return await asyncio.shield(self._probe[1])

    async def _probe_once(self, started: float) -> bool:
        try:
            response = await self._probe_http.get(f"{self.root}/health")
            ok, detail = response.status_code < 400, f"GET {self.root}/health: {response.status_code}"
        except httpx.HTTPError as exc:
            ok, detail = False, f"GET {self.root}/health: {type(exc).__name__}: {exc}"
        self.owner._health = _Health(ok, started, detail)
        self.owner._count("health_probes")
        return ok

    async def _breaker_allows(self) -> bool:
        breaker = self.owner.breaker
        probing = breaker.state != "closed"
        if not breaker.allow():
            return False
        if probing:  # we hold the half-open probe: ask /health rather than risk a request
            if await self._healthy(since=time.monotonic()):
                breaker.record_success()
                return True
            breaker.record_failure(self._down_reason())
            return False
        return True

    # -- requests --------------------------------------------------------------------------------
    def _gate(self, model: str) -> _Gate:
        if model not in self._gates:
            self._gates[model] = _Gate(self.owner.concurrency(model))
        return self._gates[model]

    def _watch(self, task: asyncio.Task, sent_at: float, epoch: int, limit: AdaptiveConcurrency) -> None:
        """Have the session's watchdog check on `task`'s request while it waits for its answer."""
        self._waiting[task] = _Waiting(sent_at, epoch, limit, sent_at)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.ensure_future(self._watchdog_loop())

    async def _watchdog_loop(self) -> None:
        """Every `request_timeout_s` a request waits without an answer, ask `/health` (one probe for all).

        Healthy: the request waits in the server's queue. It is kept (abandoning it would waste
        the server's work and requeue it at the back) and the concurrency is cut, so fewer new
        requests join the queue. Not healthy: the server is down and the request is abandoned.
        One timer for the session rather than one per request: the request path stays as short
        as a plain `await`, which keeps a fast server's batch full.
        """
        timeout = self.owner.request_timeout_s
        while self._waiting:
            await asyncio.sleep(max(0.01, timeout / 4))
            now = time.monotonic()
            late = [(task, w) for task, w in self._waiting.items() if now - w.checked_at >= timeout]
            if not late:
                continue
            # Probes started a moment ago answer for every request checking in together.
            healthy = await self._healthy(since=now - min(1.0, timeout / 2))
            for task, waiting in late:
                if self._waiting.get(task) is not waiting:
                    continue  # answered meanwhile
                if healthy:
                    waiting.checked_at = now
                    if waiting.limit.on_overload(waiting.epoch):
                        log.info("LLM %s queues requests past %ss: concurrency cut to %d", self.model, timeout,
                                 waiting.limit.current)
                    self.owner._count("overloads")
                else:
                    self._abandoned.add(task)
                    task.cancel()

    async def _post(self, body: bytes) -> dict:
        """POST one chat completion (a JSON body already serialized) on the least busy pool.

        Plain httpx rather than the `openai` SDK: `benchmarks/llm_throughput.py` measured the SDK
        (even its low-level `post`, without the typed models) at about 0.5 ms more client CPU per
        request, 0.03 to 0.06 of the capacity ratio at 160 requests/s on 2 cores, over the 0.03 we
        allow (`chat.completions.create`, with its TypedDict transform and typed answers, far more).
        """
        i = max(range(len(self._free)), key=self._free.__getitem__)
        self._free[i] -= 1
        try:
            response = await self.clients[i].post("/v1/chat/completions", content=body)
        finally:
            self._free[i] += 1
        if response.status_code >= 400:
            raise _HTTPStatus(response)
        try:
            return response.json()
        except ValueError:  # a 200 that is not JSON: no text, and the caller decides (re-ask)
            return {}

    async def complete(self, request: LLMRequest) -> LLMAnswer:
        owner = self.owner
        model = request.model or self.model
        gate = self._gate(model)
        fields: dict = {"model": model, "messages": request.messages}
        if request.json_schema is not None:
            fields["response_format"] = request.response_format()
        if request.max_tokens is not None:
            fields["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            fields["temperature"] = request.temperature
        body = json.dumps(fields).encode()  # once, before waiting for a slot: a freed slot refills at once
        first_sent = time.monotonic()
        attempts = hard_retries = 0
        latency = 0.0
        while True:
            await gate.acquire()
            # Asked once a slot is free: requests queued behind a failing server fail fast when it opens.
            if not await self._breaker_allows():
                gate.release()
                return LLMAnswer(latency_s=latency, attempts=attempts, error_kind="circuit_open",
                                 error=f"circuit breaker open: {owner.breaker.reason}")
            epoch = gate.limit.epoch
            attempts += 1
            owner._count("attempts")
            sent_at = time.monotonic()
            kind = detail = None
            overload = False  # the server is up but has no room: cut concurrency, wait, try again
            retry_after = None
            completion = None
            task = asyncio.current_task()
            self._watch(task, sent_at, epoch, gate.limit)
            try:
                completion = await self._post(body)
            except asyncio.CancelledError:
                abandoned = task in self._abandoned
                self._abandoned.discard(task)
                if not abandoned or task.uncancel() > 0:
                    gate.release()
                    raise  # not (only) the watchdog's doing: the caller is being cancelled
                kind, detail = "timeout", f"no answer within {owner.request_timeout_s}s and /health fails"
            except (httpx.ConnectTimeout, httpx.PoolTimeout):
                kind, detail = "connect", f"no connection within {owner.connect_timeout_s}s"
            except httpx.TimeoutException:
                kind, detail = "timeout", f"no answer within {owner.overload_patience_s}s"
            except httpx.RequestError as exc:  # refused, reset, dropped without an answer
                kind, detail = "connect", f"{type(exc).__name__}: {exc}"
            except _HTTPStatus as exc:
                if exc.status in (429, 503):
                    kind, overload = ("http_429" if exc.status == 429 else "http_5xx"), True
                    detail, retry_after = f"server overloaded ({exc.status})", exc.retry_after_s
                elif exc.status >= 500:
                    kind, detail = "http_5xx", f"server error {exc}"
                else:
                    owner.breaker.record_success()  # the server is up; the request itself is wrong
                    gate.release()
                    return LLMAnswer(latency_s=latency + time.monotonic() - sent_at, attempts=attempts,
                                     error_kind="http_4xx", error=f"rejected {exc}")
            except Exception as exc:  # anything else: flag the request, never raise
                gate.release()
                return LLMAnswer(latency_s=latency + time.monotonic() - sent_at, attempts=attempts,
                                 error_kind="backend_error", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._waiting.pop(task, None)
            latency += time.monotonic() - sent_at
            # Booked before the slot is freed, so the next request in line sees the new limit and breaker.
            if completion is not None:
                gate.limit.on_success()
                owner.breaker.record_success()
            elif kind == "http_5xx" and not overload:  # a 5xx from a server that is up
                owner.breaker.record_failure(f"{owner.breaker.failure_threshold} server errors in a row "
                                             f"from {self.root}, the last: {detail}")
            gate.release()
            # Let the request waiting for this slot go out before the caller spends CPU on this
            # answer: the server's batch refills first, parsing overlaps with generation.
            await asyncio.sleep(0)
            if completion is not None:
                return _answer_from(completion, latency, attempts)

            if kind in ("timeout", "connect"):
                # A long queue and a dead server both time out; /health tells them apart.
                if await self._healthy(since=sent_at):
                    overload = kind == "timeout"  # waited the whole patience: it fails below
                else:
                    owner.breaker.trip(self._down_reason())
            if overload:
                if gate.limit.on_overload(epoch):
                    log.info("LLM %s overloaded (%s): concurrency cut to %d", model, kind, gate.limit.current)
                owner._count("overloads")
            elif hard_retries >= owner.max_retries:
                return LLMAnswer(latency_s=latency, attempts=attempts, error_kind=kind,
                                 error=f"{detail} (after {hard_retries} retries)")
            else:
                hard_retries += 1
            # Hard failures back off exponentially; overload only spreads its retries (full jitter on
            # the base): the adaptive gate already holds them back, a growing sleep would idle the server.
            delay = full_jitter_backoff(0 if overload else hard_retries - 1, owner.backoff_base_s, owner.backoff_max_s)
            if retry_after is not None:
                delay = min(owner.backoff_max_s, max(delay, retry_after))
            if overload and time.monotonic() + delay - first_sent > owner.overload_patience_s:
                return LLMAnswer(latency_s=latency, attempts=attempts, error_kind=kind,
                                 error=f"{detail}; still overloaded after {owner.overload_patience_s}s")
            owner._count("retries")
            await asyncio.sleep(delay)


def _answer_from(completion: dict, latency_s: float, attempts: int) -> LLMAnswer:
    """An `LLMAnswer` from a chat completion's JSON; a malformed one comes back with no text."""
    try:
        choice = completion["choices"][0]
        text, finish = choice["message"]["content"], choice.get("finish_reason")
    except (KeyError, IndexError, TypeError):
        text, finish = None, None
    usage = completion.get("usage") if isinstance(completion, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return LLMAnswer(text=text if isinstance(text, str) else None, finish_reason=finish,
                     prompt_tokens=int(usage.get("prompt_tokens") or 0),
                     completion_tokens=int(usage.get("completion_tokens") or 0),
                     latency_s=round(latency_s, 6), attempts=attempts)


class OfflineSession:
    """Requests to in-process vLLM: those sent together go to the engine in one `chat` call.

    `run_batch` answers a list of requests in order (the engine call); it runs in a worker
    thread so the event loop keeps collecting the next wave (re-asks) meanwhile.
    """

    def __init__(self, run_batch: Callable[[list[LLMRequest]], list[LLMAnswer]]):
        self._run_batch = run_batch
        self._pending: list[tuple[LLMRequest, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def __aenter__(self) -> "OfflineSession":
        return self

    async def __aexit__(self, *exc) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def complete(self, request: LLMRequest) -> LLMAnswer:
        answer = asyncio.get_running_loop().create_future()
        self._pending.append((request, answer))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await answer

    async def _flush(self) -> None:
        while self._pending:
            # Let every caller that is ready add its request first: one engine call for the wave.
            waiting = -1
            while waiting != len(self._pending):
                waiting = len(self._pending)
                await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            try:
                answers = await asyncio.to_thread(self._run_batch, [r for r, _ in batch])
            except Exception as exc:  # no engine at all (vLLM missing): the callers raise, clearly
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)


class _NotConfiguredSession:
    async def __aenter__(self):
        raise RuntimeError("the LLM transport is not configured (no LLM_BASE_URL and backend not 'offline'): "
                           "check `configured` and use the local strategy")

    async def __aexit__(self, *exc) -> None:
        return None


def offline_answers(outputs: Sequence, elapsed_s: float) -> list[LLMAnswer]:
    """`LLMAnswer`s from vLLM `RequestOutput`s, the batch's time shared evenly."""
    per_request = elapsed_s / max(1, len(outputs))
    answers = []
    for o in outputs:
        out = o.outputs[0]
        answers.append(LLMAnswer(text=out.text, finish_reason=out.finish_reason,
                                 prompt_tokens=len(o.prompt_token_ids or []),
                                 completion_tokens=len(out.token_ids or []),
                                 latency_s=round(per_request, 6), attempts=1))
    return answers


class LLMResource(dg.ConfigurableResource):
    """The LLM transport behind `enriched/cases`: a vLLM server or in-process vLLM.

    Bind with `EnvVar`s in production: `base_url=EnvVar("LLM_BASE_URL")`, `model=EnvVar("LLM_MODEL")`,
    `backend=EnvVar("LLM_BACKEND")`. With no backend set: `server` when `base_url` is set, else not
    configured (`configured` False): the enrichment domain then decides cases locally.
    """

    backend: str | None = Field(default=None, description="server | offline | local (no LLM); derived when unset")
    base_url: str | None = Field(default=None, description="vLLM OpenAI-compatible URL, e.g. http://vllm:8000/v1")
    model: str | None = Field(default=None, description="model name; for the server, the first served one if unset")
    api_key: str | None = Field(default=None, description="sent as a bearer token when set")
    max_concurrency: int = Field(default=32, description="most requests in flight per model (the adaptive "
                                                         "limit starts here and never exceeds it)")
    min_concurrency: int = Field(default=1, description="the adaptive limit never goes below this")
    request_timeout_s: float = Field(default=60.0, description="an answer slower than this is checked on: "
                                                               "/health up, it keeps waiting (a queue; "
                                                               "concurrency is cut); down, it is abandoned")
    connect_timeout_s: float = Field(default=5.0, description="connect timeout: a server that does not accept "
                                                              "a connection in this time is down")
    health_timeout_s: float = Field(default=5.0, description="timeout of a /health probe")
    max_retries: int = Field(default=3, description="retries of a request on 5xx, a dropped connection or a "
                                                    "server that is down")
    overload_patience_s: float = Field(default=600.0, description="how long a request may wait and retry "
                                                                  "while the server is up but overloaded "
                                                                  "(429, 503, a long queue); also the read "
                                                                  "timeout")
    backoff_base_s: float = Field(default=0.5, description="first backoff; doubles per retry, full jitter")
    backoff_max_s: float = Field(default=10.0, description="backoff cap")
    breaker_failure_threshold: int = Field(default=10, description="5xx answers in a row that open the breaker")
    breaker_reset_s: float = Field(default=30.0, description="time open before /health is probed again")

    _breaker: CircuitBreaker | None = PrivateAttr(default=None)
    _served_model: str | None = PrivateAttr(default=None)
    _offline_engine: object | None = PrivateAttr(default=None)
    _limits: dict = PrivateAttr(default_factory=dict)
    _health: _Health | None = PrivateAttr(default=None)
    _stats: dict = PrivateAttr(default_factory=dict)
    _lock: object = PrivateAttr(default_factory=threading.Lock)
    _tls: ssl.SSLContext | None = PrivateAttr(default=None)

    # -- configuration -------------------------------------------------------------------------
    def with_endpoint(self, backend: str, base_url: str | None, model: str | None) -> LLMResource:
        """A transport to another endpoint or model with this one's tuning (timeouts, retries,
        concurrency, breaker): what a caller needs to talk to a second server in the same run.

        Itself when nothing differs (the breaker and concurrency limits stay shared). The API key
        goes only to this resource's own server: a key is never sent to a server it was not set for.
        """
        wanted = NOT_CONFIGURED if backend == "local" else backend
        if (wanted, base_url, model) == (self.resolved_backend(), self.base_url, self.model):
            return self
        tuning = {name: getattr(self, name) for name in type(self).model_fields
                  if name not in ("backend", "base_url", "model", "api_key")}
        same_server = bool(base_url) and (base_url or "").rstrip("/") == (self.base_url or "").rstrip("/")
        return LLMResource(**tuning, backend=backend, base_url=base_url, model=model,
                           api_key=self.api_key if same_server else None)

    def resolved_backend(self) -> str:
        """`server`, `offline`, or `none` (not configured: no LLM)."""
        backend = (self.backend or ("server" if self.base_url else "local")).strip().lower()
        if backend not in BACKENDS:
            raise ValueError(f"LLM backend must be one of {BACKENDS}, got {self.backend!r}")
        if backend == "server" and not self.base_url:
            raise ValueError("LLM backend 'server' needs base_url (LLM_BASE_URL)")
        if backend == "offline" and not self.model:
            raise ValueError("LLM backend 'offline' needs model (LLM_MODEL)")
        return NOT_CONFIGURED if backend == "local" else backend

    @property
    def configured(self) -> bool:
        """Is there an LLM to talk to? False: the caller decides without one."""
        return self.resolved_backend() != NOT_CONFIGURED

    def model_id(self) -> str | None:
        """The model requests go to: configured, or for the server the first one it serves."""
        backend = self.resolved_backend()
        if backend == NOT_CONFIGURED:
            return None
        if backend == "server" and not self.model:
            if self._served_model is None:
                self.check_health()
            return self._served_model
        return self.model

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.resolved_backend() == "server":
            self.check_health()

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context of every pool this instance opens, made once: loading the CA bundle takes
        about 0.15 s, a few percent of a batch if every session paid it. Plain http needs no CAs."""
        if self._tls is None:
            self._tls = (httpx.create_ssl_context() if self.root_url().startswith("https://")
                         else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        return self._tls

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def root_url(self) -> str:
        root = (self.base_url or "").rstrip("/")
        return root[: -len("/v1")] if root.endswith("/v1") else root

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker shared by every session of this resource instance."""
        if self._breaker is None:
            self._breaker = CircuitBreaker(self.breaker_failure_threshold, self.breaker_reset_s)
        return self._breaker

    def concurrency(self, model: str | None = None) -> AdaptiveConcurrency:
        """The adaptive concurrency limit of `model` (default: this resource's), shared by sessions."""
        key = model or self.model_id() or ""
        with self._lock:
            if key not in self._limits:
                self._limits[key] = AdaptiveConcurrency(self.max_concurrency, self.min_concurrency,
                                                        window_s=self.request_timeout_s)
            return self._limits[key]

    def preferred_in_flight(self) -> int | None:
        """How many requests a caller should have queued at once: enough to refill the server's
        batch without delay (twice the concurrency), or None for offline (everything: one call)."""
        return None if self.resolved_backend() == "offline" else 2 * max(1, self.max_concurrency)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] = self._stats.get(name, 0) + n

    def stats(self) -> dict:
        """Counters since this instance was made: attempts, retries, overloads, health probes,
        and the state of the breaker and of each model's concurrency limit."""
        with self._lock:
            counters = dict(self._stats)
            limits = {m: {"limit": lim.current, "cuts": lim.cuts} for m, lim in self._limits.items()}
        return {"attempts": counters.get("attempts", 0), "retries": counters.get("retries", 0),
                "overloads": counters.get("overloads", 0), "health_probes": counters.get("health_probes", 0),
                "breaker_state": self.breaker.state, "breaker_times_opened": self.breaker.times_opened,
                "concurrency": limits}

    # -- server ----------------------------------------------------------------------------------
    def check_health(self) -> dict:
        """GET /health and /v1/models; raises `LLMServerUnavailable` naming the URL."""
        root = self.root_url()
        started = time.monotonic()
        try:
            health = httpx.get(f"{root}/health", timeout=self.health_timeout_s)
            health.raise_for_status()
        except httpx.HTTPError as exc:
            self._health = _Health(False, started, f"GET {root}/health: {exc}")
            raise LLMServerUnavailable(
                f"LLM server at {root} is not healthy (GET {root}/health: {exc}). Start vLLM there, fix "
                f"LLM_BASE_URL, or unset it to use the local backend.") from exc
        self._health = _Health(True, started, f"GET {root}/health: {health.status_code}")
        try:
            listed = httpx.get(f"{root}/v1/models", headers=self.auth_headers(), timeout=self.health_timeout_s)
            listed.raise_for_status()
            served = [m["id"] for m in listed.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise LLMServerUnavailable(f"LLM server at {root} did not list its models (GET {root}/v1/models: "
                                       f"{exc}); check LLM_BASE_URL and the API key.") from exc
        if not served:
            raise LLMServerUnavailable(f"LLM server at {root} serves no model")
        if self.model and self.model not in served:
            raise LLMServerUnavailable(f"LLM server at {root} does not serve model {self.model!r} "
                                       f"(it serves {served}); fix LLM_MODEL.")
        self._served_model = self.model or served[0]
        return {"url": root, "models": served}

    # -- requests --------------------------------------------------------------------------------
    def session(self):
        """An async context manager whose `complete(request)` answers one request on the running loop.

        Keep one session per batch: it holds the connection pool, and shares the breaker, the
        health observations and the concurrency limits with every other session of this instance.
        """
        backend = self.resolved_backend()
        if backend == "server":
            return _ServerSession(self)
        if backend == "offline":
            return OfflineSession(self._run_offline_batch)
        return _NotConfiguredSession()

    def complete(self, requests: Sequence[LLMRequest]) -> list[LLMAnswer]:
        """Answer every request (blocking): one answer per request, in order, never raising for one."""
        if not requests:
            return []

        async def run() -> list[LLMAnswer]:
            async with self.session() as session:
                return list(await asyncio.gather(*(session.complete(r) for r in requests)))

        return run_blocking(run())

    # -- offline ---------------------------------------------------------------------------------
    def _run_offline_batch(self, requests: list[LLMRequest]) -> list[LLMAnswer]:
        """One `LLM.chat` over all requests, each decoding constrained by its own schema."""
        try:
            from vllm import LLM, SamplingParams
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError as exc:
            raise RuntimeError("LLM backend 'offline' needs vLLM: install the 'gpu' extra on a GPU node") from exc
        try:
            if self._offline_engine is None:
                self._offline_engine = LLM(model=self.model)
            params = [SamplingParams(temperature=r.temperature or 0.0, max_tokens=r.max_tokens,
                                     structured_outputs=(StructuredOutputsParams(json=r.json_schema)
                                                         if r.json_schema is not None else None))
                      for r in requests]
            started = time.perf_counter()
            outputs = self._offline_engine.chat([r.messages for r in requests], params,  # type: ignore[attr-defined]
                                                use_tqdm=False)
            self._count("attempts", len(requests))
            return offline_answers(outputs, time.perf_counter() - started)
        except Exception as exc:  # an engine failure fails the batch, flagged per request, never dropped
            log.warning("offline LLM batch failed: %s", type(exc).__name__)
            return [LLMAnswer(attempts=1, error_kind="backend_error",
                              error=f"offline engine: {type(exc).__name__}: {exc}"[:500]) for _ in requests]
