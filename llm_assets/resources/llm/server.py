"""The `server` backend: `ServerSession`, requests to an OpenAI-compatible server (vLLM) over async
httpx connection pools on one event loop, and the `/health` observations (`Health`) it shares with
the resource. Every request carries its JSON schema as `response_format`; the `openai` SDK
measured 0.03 to 0.06 of the capacity ratio slower (see `ServerSession._post`).

Against a slow or saturated server the session backs off instead of failing (the mechanics are in
`resilience.py`):
- a request with no answer after `request_timeout_s` is checked on, not abandoned: `/health`
  answers, so it waits in the server's queue and keeps its place (abandoning it would throw the
  server's work away) and the concurrency is cut; `/health` fails, so the server is down: the
  request is abandoned. The connect timeout is short (a server that does not accept is down),
  the read timeout long (`overload_patience_s`);
- overload is retried with jittered backoff for up to `overload_patience_s`; hard failures (5xx,
  dropped connections, a dead server) with exponential full-jitter backoff up to `max_retries`;
- each session starts with a `/health` probe, so a dead server costs one probe instead of a
  burst of requests, and a half-open breaker probes `/health` before letting a request through.

`ServerSession.complete` never raises for a request: one that cannot be answered comes back with
an `error_kind`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from llm_assets.resources.llm.resilience import AdaptiveConcurrency, ConcurrencyGate, full_jitter_backoff
from llm_assets.resources.llm.types import LLMAnswer, LLMRequest

if TYPE_CHECKING:  # typing only: the resource makes the sessions, this module never imports it
    from llm_assets.resources.llm.resource import LLMResource

log = logging.getLogger(__name__)
SHARD_CONNECTIONS = 8  # connections per httpx pool (see `ServerSession.__init__`)
_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Health:
    """The latest `/health` observation: when the probe started, and what it said."""

    ok: bool
    started_at: float
    detail: str = ""


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


class ServerSession:
    """Requests to the OpenAI-compatible server over httpx connection pools, on one event loop."""

    def __init__(self, owner: "LLMResource"):
        self.owner = owner
        self.model = owner.model_id()
        self.root = owner.root_url()
        self._gates: dict[str, ConcurrencyGate] = {}
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

    async def __aenter__(self) -> "ServerSession":
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
        self.owner._health = Health(ok, started, detail)
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
    def _gate(self, model: str) -> ConcurrencyGate:
        if model not in self._gates:
            self._gates[model] = ConcurrencyGate(self.owner.concurrency(model))
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
