"""How the transport holds back from a failing or saturated server: the `CircuitBreaker`, the
full-jitter backoff, the adaptive (AIMD) concurrency limit per model and the `ConcurrencyGate` that
admits requests under it. Numbers and locks only: no HTTP, no Dagster.

- concurrency is adaptive per model (AIMD): cut on an overload signal (429, 503, or a request
  past `request_timeout_s` on a healthy server) at most once per round of requests, never above
  what the server answers within `request_timeout_s`; grown by about one per round of answers;
  between `min_concurrency` and `max_concurrency`;
- the circuit breaker opens for a server that is down (connection refused or `/health` failing,
  or `breaker_failure_threshold` 5xx answers in a row), never for a slow one; half-open, it lets
  exactly one probe through.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from typing import Callable

log = logging.getLogger(__name__)


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


class ConcurrencyGate:
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
