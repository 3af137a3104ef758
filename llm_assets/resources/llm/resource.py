"""`LLMResource`: the Dagster resource of the LLM transport. Its configuration (backend, endpoint,
model, timeouts, retries, concurrency, breaker), the setup health check, the breaker and the
concurrency limits its sessions share, its counters, and `session()` / `complete()`, which hand
requests to the backend's session (`server.py`, `offline.py`) or refuse when not configured.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
import time
from typing import Sequence

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from llm_assets.resources.llm.bridge import run_blocking
from llm_assets.resources.llm.offline import OfflineSession, run_offline_batch
from llm_assets.resources.llm.resilience import AdaptiveConcurrency, CircuitBreaker
from llm_assets.resources.llm.server import Health, ServerSession
from llm_assets.resources.llm.types import BACKENDS, NOT_CONFIGURED, LLMAnswer, LLMRequest, LLMServerUnavailable


class _NotConfiguredSession:
    """The session of a transport with no LLM: entering it says so (the caller checks `configured`)."""

    async def __aenter__(self):
        raise RuntimeError("the LLM transport is not configured (no LLM_BASE_URL and backend not 'offline'): "
                           "check `configured` and use the local strategy")

    async def __aexit__(self, *exc) -> None:
        return None


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
    _health: Health | None = PrivateAttr(default=None)
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
            self._health = Health(False, started, f"GET {root}/health: {exc}")
            raise LLMServerUnavailable(
                f"LLM server at {root} is not healthy (GET {root}/health: {exc}). Start vLLM there, fix "
                f"LLM_BASE_URL, or unset it to use the local backend.") from exc
        self._health = Health(True, started, f"GET {root}/health: {health.status_code}")
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
            return ServerSession(self)
        if backend == "offline":
            return OfflineSession(functools.partial(run_offline_batch, self))
        return _NotConfiguredSession()

    def complete(self, requests: Sequence[LLMRequest]) -> list[LLMAnswer]:
        """Answer every request (blocking): one answer per request, in order, never raising for one."""
        if not requests:
            return []

        async def run() -> list[LLMAnswer]:
            async with self.session() as session:
                return list(await asyncio.gather(*(session.complete(r) for r in requests)))

        return run_blocking(run())
