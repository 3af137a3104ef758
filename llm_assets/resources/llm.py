"""`LLMResource`: the one LLM client of the assets, with three backends.

- `server`: vLLM's OpenAI-compatible API over async httpx. Up to `max_concurrency` requests in
  flight so vLLM's continuous batching stays full; every request carries the skill's JSON schema
  as `response_format`; per-request timeout; retries with exponential backoff and full jitter on
  timeouts, 5xx, 429 and dropped connections (and once on invalid or truncated output); a
  circuit breaker that fails cases fast while the server is down.
- `offline`: in-process `vllm.LLM.chat` over the whole batch with `StructuredOutputsParams`, for
  large backfills on a GPU node (vLLM is imported lazily: it is only in the `gpu` extra).
- `local`: no LLM; `run_cases` delegates to the caller's rules enricher.

`run_cases` returns exactly one `CaseResult` per case, in order, and never raises for a case:
a case that cannot be enriched comes back `ok=False` with an `error_kind`, and the enrichment
asset routes it to the fallback. Only redacted prompts are built (see `enrichment.prompts`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Coroutine, Sequence, TypeVar

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from llm_assets.enrichment.parsing import InvalidModelOutput, ParsedEnrichment, merge_answers, parse_skill_answer
from llm_assets.enrichment.prompts import PromptTemplate, build_messages, prompt_sha256, prompt_version, templates_for
from llm_assets.enrichment.types import CaseContext, CaseResult

log = logging.getLogger(__name__)
_JSON_HEADERS = {"Content-Type": "application/json"}
BACKENDS = ("server", "offline", "local")
LocalEnricher = Callable[[list[CaseContext]], list[CaseResult]]
T = TypeVar("T")


class LLMServerUnavailable(RuntimeError):
    """The configured LLM server cannot serve: raised at resource setup, naming the URL."""


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; while open, callers fail fast.

    After `reset_s` it half-opens: exactly one probe is let through; its success closes the
    breaker, its failure opens it again for another `reset_s`. No Dagster, no I/O.
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

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            probe_failed = self._probe_in_flight
            if probe_failed or (self._opened_at is None and self._failures >= self.failure_threshold):
                self._opened_at, self._probe_in_flight = self._clock(), False
                self.times_opened += 1
                log.warning("LLM circuit breaker %s after %d consecutive failures",
                            "re-opened" if probe_failed else "opened", self._failures)


def full_jitter_backoff(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """AWS-style full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return (rng or random).uniform(0.0, min(cap_s, base_s * (2 ** attempt)))


@dataclass
class _SkillOutcome:
    """One skill's answer for one case after retries, and what it cost."""

    parsed: ParsedEnrichment | None = None
    error_kind: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    calls: int = 0


@dataclass(frozen=True)
class OfflineAnswer:
    """What the offline engine produced for one conversation."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ShardedClient:
    """Several small httpx pools behind one `post`, each request on the least busy pool.

    httpcore 1.0's pool rescans every connection on each request and release, so its cost per
    request grows with the pool size (encode/httpx#3215); pools of `shard_size` keep that scan short
    at 32+ requests in flight. The callers' semaphore keeps the total within `max_connections`.
    """

    def __init__(self, max_connections: int, shard_size: int = 8, **client_kwargs):
        sizes = [min(shard_size, max_connections - start) for start in range(0, max_connections, shard_size)]
        tls = httpx.create_ssl_context()  # loading the CA bundle once, not once per pool
        self._clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                                           verify=tls, **client_kwargs) for n in sizes]
        self._free = list(sizes)

    async def post(self, path: str, body: bytes) -> httpx.Response:
        """POST a JSON body already serialized."""
        i = max(range(len(self._free)), key=self._free.__getitem__)
        self._free[i] -= 1
        try:
            return await self._clients[i].post(path, content=body, headers=_JSON_HEADERS)
        finally:
            self._free[i] += 1

    async def __aenter__(self) -> "_ShardedClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.gather(*(c.aclose() for c in self._clients))


def _run_coroutine(coro: Coroutine[object, object, T]) -> T:
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

    worker = threading.Thread(target=target, name="llm-resource-loop")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def align_results(cases: Sequence[CaseContext], results: Sequence[CaseResult], origin: str) -> list[CaseResult]:
    """One result per case, in case order; a case without a result gets a flagged one."""
    if len(results) == len(cases) and all(r.event_id == c.event_id for r, c in zip(results, cases)):
        return list(results)
    by_id: dict[str, list[CaseResult]] = {}
    for r in results:
        by_id.setdefault(r.event_id, []).append(r)
    return [by_id[c.event_id].pop(0) if by_id.get(c.event_id)
            else CaseResult.failed(c.event_id, "backend_error", f"{origin} returned no result for this case")
            for c in cases]


def offline_results(cases: Sequence[CaseContext], templates: Sequence[PromptTemplate],
                    conversations: dict[str, list[list[dict]]], answers: dict[str, list[OfflineAnswer]],
                    elapsed_s: float) -> list[CaseResult]:
    """Turn the offline engine's answers (one list per skill, in case order) into case results."""
    per_case_latency = elapsed_s / max(1, len(cases))
    results = []
    for i, case in enumerate(cases):
        convs = [conversations[t.skill][i] for t in templates]
        usage = dict(redacted_prompt_sha256=prompt_sha256(convs[0] if len(convs) == 1 else convs),
                     prompt_tokens=sum(answers[t.skill][i].prompt_tokens for t in templates),
                     completion_tokens=sum(answers[t.skill][i].completion_tokens for t in templates),
                     latency_s=per_case_latency, calls=len(templates))
        parts: list[ParsedEnrichment] = []
        failure: tuple[str, str] | None = None
        for t in templates:
            answer = answers[t.skill][i]
            try:
                parts.append(parse_skill_answer(t.skill, answer.text))
            except InvalidModelOutput as exc:
                kind = "truncated" if answer.finish_reason == "length" else exc.kind
                failure = (kind, f"{t.id}: {exc}")
                break
        results.append(CaseResult.failed(case.event_id, *failure, **usage) if failure
                       else _result_from(case.event_id, merge_answers(parts), usage))
    return results


def _result_from(event_id: str, parsed: ParsedEnrichment, usage: dict) -> CaseResult:
    return CaseResult(event_id=event_id, summary=parsed.summary, label=parsed.label, confidence=parsed.confidence,
                      actions=parsed.actions, severity=parsed.severity, ok=True,
                      dropped_actions=parsed.dropped_actions, **usage)


class LLMResource(dg.ConfigurableResource):
    """The LLM behind `enriched/cases`: a vLLM server, in-process vLLM, or no LLM (local rules).

    Bind with `EnvVar`s in production: `base_url=EnvVar("LLM_BASE_URL")`, `model=EnvVar("LLM_MODEL")`,
    `backend=EnvVar("LLM_BACKEND")`. With no backend set: `server` when `base_url` is set, else `local`.
    """

    backend: str | None = Field(default=None, description="server | offline | local; derived when unset")
    base_url: str | None = Field(default=None, description="vLLM OpenAI-compatible URL, e.g. http://vllm:8000/v1")
    model: str | None = Field(default=None, description="model name; for the server, the first served one if unset")
    api_key: str | None = Field(default=None, description="sent as a bearer token when set")
    max_concurrency: int = Field(default=32, description="requests in flight at once (keep vLLM's batch full)")
    request_timeout_s: float = Field(default=60.0, description="per request")
    max_retries: int = Field(default=3, description="retries of a request on timeout, 5xx, 429 or a dropped connection")
    backoff_base_s: float = Field(default=0.5, description="first backoff; doubles per retry, full jitter")
    backoff_max_s: float = Field(default=10.0, description="backoff cap")
    breaker_failure_threshold: int = Field(default=10, description="consecutive failures that open the breaker")
    breaker_reset_s: float = Field(default=30.0, description="time open before one probe is let through")
    call_mode: str = Field(default="combined", description="combined: one call per case; per_skill: three")
    temperature: float = Field(default=0.0)
    max_tokens: int = Field(default=512, description="per answer; too small truncates the JSON")

    _breaker: CircuitBreaker | None = PrivateAttr(default=None)
    _served_model: str | None = PrivateAttr(default=None)
    _offline_engine: object | None = PrivateAttr(default=None)

    # -- configuration -------------------------------------------------------------------------
    def resolved_backend(self) -> str:
        backend = (self.backend or ("server" if self.base_url else "local")).strip().lower()
        if backend not in BACKENDS:
            raise ValueError(f"LLM backend must be one of {BACKENDS}, got {self.backend!r}")
        if backend == "server" and not self.base_url:
            raise ValueError("LLM backend 'server' needs base_url (LLM_BASE_URL)")
        if backend == "offline" and not self.model:
            raise ValueError("LLM backend 'offline' needs model (LLM_MODEL)")
        return backend

    def prompt_version(self) -> str:
        """The `prompt_version` column for this resource's call mode."""
        return prompt_version(self.call_mode)

    def model_version(self) -> str:
        """`vllm:<model>`, `offline:<model>` or `local-rules`: the `model_version` column."""
        backend = self.resolved_backend()
        if backend == "local":
            return "local-rules"
        if backend == "offline":
            return f"offline:{self.model}"
        return f"vllm:{self._model_for_requests()}"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.resolved_backend() == "server":
            self.check_health()

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker shared by every batch this resource instance sends."""
        if self._breaker is None:
            self._breaker = CircuitBreaker(self.breaker_failure_threshold, self.breaker_reset_s)
        return self._breaker

    def _root_url(self) -> str:
        root = (self.base_url or "").rstrip("/")
        return root[: -len("/v1")] if root.endswith("/v1") else root

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    # -- server backend ------------------------------------------------------------------------
    def check_health(self) -> dict:
        """GET /health and /v1/models; raises `LLMServerUnavailable` naming the URL."""
        root = self._root_url()
        timeout = min(10.0, self.request_timeout_s)
        try:
            health = httpx.get(f"{root}/health", timeout=timeout)
            health.raise_for_status()
        except httpx.HTTPError as exc:
            raise LLMServerUnavailable(
                f"LLM server at {root} is not healthy (GET {root}/health: {exc}). Start vLLM there, fix "
                f"LLM_BASE_URL, or unset it to use the local backend.") from exc
        try:
            listed = httpx.get(f"{root}/v1/models", headers=self._headers(), timeout=timeout)
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

    def _model_for_requests(self) -> str:
        if self.model:
            return self.model
        if self._served_model is None:
            self.check_health()
        return self._served_model  # type: ignore[return-value]

    def run_cases(self, cases: list[CaseContext], local_enricher: LocalEnricher | None = None) -> list[CaseResult]:
        """Enrich every case: one result per case, same order; failures come back flagged, never dropped."""
        if not cases:
            return []
        backend = self.resolved_backend()
        if backend == "local":
            if local_enricher is None:
                raise ValueError("LLM backend 'local' needs a local_enricher (the rules backend)")
            return align_results(cases, local_enricher(list(cases)), "local enricher")
        if backend == "offline":
            return self._run_offline(cases)
        return _run_coroutine(self._run_server(cases, self._model_for_requests()))

    async def _run_server(self, cases: list[CaseContext], model: str) -> list[CaseResult]:
        templates = templates_for(self.call_mode)
        in_flight = asyncio.Semaphore(max(1, self.max_concurrency))
        # Admit a bounded number of cases at once so prompts are built just in time, while others wait on I/O.
        admitted = asyncio.Semaphore(max(1, self.max_concurrency) * 2)
        async with _ShardedClient(max(1, self.max_concurrency), base_url=self._root_url(), headers=self._headers(),
                                  timeout=httpx.Timeout(self.request_timeout_s)) as client:
            async def enrich(case: CaseContext) -> CaseResult:
                async with admitted:
                    return await self._enrich_case(client, in_flight, model, templates, case)

            return list(await asyncio.gather(*(enrich(c) for c in cases)))

    async def _enrich_case(self, client: _ShardedClient, in_flight: asyncio.Semaphore, model: str,
                           templates: Sequence[PromptTemplate], case: CaseContext) -> CaseResult:
        conversations = [build_messages(t, case) for t in templates]
        sha = prompt_sha256(conversations[0] if len(conversations) == 1 else conversations)
        outcomes = await asyncio.gather(*(self._call_skill(client, in_flight, model, t, conv)
                                          for t, conv in zip(templates, conversations)))
        usage = dict(redacted_prompt_sha256=sha, prompt_tokens=sum(o.prompt_tokens for o in outcomes),
                     completion_tokens=sum(o.completion_tokens for o in outcomes),
                     latency_s=round(sum(o.latency_s for o in outcomes), 6), calls=sum(o.calls for o in outcomes))
        failed = next((o for o in outcomes if o.error_kind), None)
        if failed is not None:
            return CaseResult.failed(case.event_id, failed.error_kind, failed.error or failed.error_kind, **usage)
        return _result_from(case.event_id, merge_answers([o.parsed for o in outcomes]), usage)

    async def _call_skill(self, client: _ShardedClient, in_flight: asyncio.Semaphore, model: str,
                          template: PromptTemplate, messages: list[dict]) -> _SkillOutcome:
        # Serialized once, before waiting for a slot, so a freed slot is refilled without delay.
        body = json.dumps({"model": model, "messages": messages, "response_format": template.response_format(),
                           "temperature": self.temperature, "max_tokens": self.max_tokens}).encode()
        outcome = _SkillOutcome()
        breaker = self.breaker
        transport_retries = 0
        output_retried = False
        while True:
            kind, error, retry_after, response = None, None, None, None
            async with in_flight:  # held only while the request is on the wire, never while backing off
                # Asked once a slot is free: cases queued behind a failing server fail fast when it opens.
                if not breaker.allow():
                    outcome.error_kind, outcome.error = "circuit_open", (
                        f"circuit breaker open: {self._root_url()} failed {breaker.failure_threshold} times in a row")
                    return outcome
                outcome.calls += 1
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/chat/completions", body)
                except httpx.TimeoutException as exc:
                    kind, error = "timeout", f"no answer within {self.request_timeout_s}s ({type(exc).__name__})"
                except httpx.RequestError as exc:  # refused, reset, dropped without an answer
                    kind, error = "connect", f"{type(exc).__name__}: {exc}"
                except Exception as exc:  # anything else: flag the case, keep the breaker's books right
                    breaker.record_failure()
                    outcome.error_kind, outcome.error = "backend_error", f"{type(exc).__name__}: {exc}"
                    return outcome
                finally:
                    outcome.latency_s += time.perf_counter() - started
                if response is not None:
                    status = response.status_code
                    if status == 429:
                        kind, error = "http_429", "server overloaded (429)"
                        retry_after = _retry_after_s(response)
                    elif status >= 500:
                        kind, error = "http_5xx", f"server error {status}: {response.text[:200]}"
                    elif status >= 400:
                        breaker.record_success()  # the server is up; the request itself is wrong: no retry
                        outcome.error_kind, outcome.error = "http_4xx", f"rejected {status}: {response.text[:200]}"
                        return outcome
                # Booked before the slot is freed, so the next case in line sees an opened breaker.
                if kind is None:
                    breaker.record_success()
                else:
                    breaker.record_failure()
            # Let the request waiting for this slot go out before we spend CPU on this answer:
            # the server's batch refills first, parsing overlaps with generation.
            await asyncio.sleep(0)
            if kind is not None:
                if transport_retries >= self.max_retries:
                    outcome.error_kind, outcome.error = kind, f"{error} (after {transport_retries} retries)"
                    return outcome
                delay = full_jitter_backoff(transport_retries, self.backoff_base_s, self.backoff_max_s)
                if retry_after is not None:
                    delay = min(self.backoff_max_s, max(delay, retry_after))
                transport_retries += 1
                await asyncio.sleep(delay)
                continue
            try:
                payload = response.json()
                usage = payload.get("usage") or {}
                outcome.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                outcome.completion_tokens += int(usage.get("completion_tokens") or 0)
                choice = payload["choices"][0]
                content = choice["message"]["content"]
                finish_reason = choice.get("finish_reason")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                parse_error: InvalidModelOutput = InvalidModelOutput("invalid_output", f"not a chat completion: {exc}")
            else:
                try:
                    outcome.parsed = parse_skill_answer(template.skill, content)
                    return outcome
                except InvalidModelOutput as exc:
                    if finish_reason == "length":
                        exc.kind = "truncated"
                    parse_error = exc
            if output_retried:
                outcome.error_kind, outcome.error = parse_error.kind, f"{template.id}: {parse_error}"
                return outcome
            output_retried = True

    # -- offline backend -----------------------------------------------------------------------
    def _run_offline(self, cases: list[CaseContext]) -> list[CaseResult]:
        """One `LLM.chat` over all cases per skill, decoding constrained by the skill's schema."""
        try:
            from vllm import LLM, SamplingParams
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError as exc:
            raise RuntimeError("LLM backend 'offline' needs vLLM: install the 'gpu' extra on a GPU node") from exc
        if self._offline_engine is None:
            self._offline_engine = LLM(model=self.model)
        engine = self._offline_engine
        templates = templates_for(self.call_mode)
        conversations = {t.skill: [build_messages(t, c) for c in cases] for t in templates}
        started = time.perf_counter()
        answers: dict[str, list[OfflineAnswer]] = {}
        try:
            for t in templates:
                params = SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens,
                                        structured_outputs=StructuredOutputsParams(json=t.schema))
                outputs = engine.chat(conversations[t.skill], params, use_tqdm=False)  # type: ignore[attr-defined]
                answers[t.skill] = [OfflineAnswer(text=o.outputs[0].text, finish_reason=o.outputs[0].finish_reason,
                                                  prompt_tokens=len(o.prompt_token_ids or []),
                                                  completion_tokens=len(o.outputs[0].token_ids or []))
                                    for o in outputs]
        except Exception as exc:  # an engine failure fails the batch, flagged per case, never dropped
            log.warning("offline LLM batch failed: %s", type(exc).__name__)
            return [CaseResult.failed(c.event_id, "backend_error", f"offline engine: {type(exc).__name__}: {exc}")
                    for c in cases]
        return offline_results(cases, templates, conversations, answers, time.perf_counter() - started)


def _retry_after_s(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
