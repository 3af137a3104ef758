"""The data of enrichment: one `CaseContext` in, one `CaseResult` out, and `BatchStats` to
report the cases sent to an LLM in materialization metadata. Pure dataclasses, no Dagster."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

# Why a case did not get an LLM answer; the pipeline routes every one of them to the fallback.
# The transport's kinds (`resources.llm.ERROR_KINDS`) plus the two of reading answers.
ERROR_KINDS = (
    "timeout",         # no answer within the request timeout (after retries, or the overload patience)
    "http_5xx",        # the server failed, or stayed overloaded (503), after retries
    "http_429",        # the server shed load past the overload patience
    "http_4xx",        # the request was rejected (bad schema, auth): not retried
    "connect",         # the server could not be reached or dropped the connection (after retries)
    "circuit_open",    # the breaker was open (the server is down): failed fast, nothing sent
    "backend_error",   # the offline engine raised for the whole batch
    "invalid_output",  # the answer was not the JSON the schema asks for (after one re-ask)
    "truncated",       # the answer stopped mid-JSON (max_tokens too small; after one re-ask)
)


@dataclass(frozen=True)
class CaseContext:
    """What the LLM may see of one case. `text` is ALREADY REDACTED by the caller."""

    event_id: str
    text: str
    # Non-PII fields only: source_system, partner_id, partner_risk_tier, is_exception, exception_type.
    fields: dict[str, str] = field(default_factory=dict)
    # Retrieved KB documents, best first: {doc_id, type, label, content}.
    retrieved: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class CaseResult:
    """The enrichment of one case, or why there is none (`ok=False`, `error_kind`)."""

    event_id: str
    summary: str | None
    label: str | None
    confidence: float | None
    actions: list[dict] | None
    severity: int | None
    ok: bool
    error_kind: str | None = None
    error: str | None = None
    dropped_actions: int = 0
    redacted_prompt_sha256: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    calls: int = 0

    @classmethod
    def failed(cls, event_id: str, error_kind: str, error: str, **usage) -> "CaseResult":
        """A flagged result: the case is kept, the asset sends it down the fallback route."""
        return cls(event_id=event_id, summary=None, label=None, confidence=None, actions=None, severity=None,
                   ok=False, error_kind=error_kind, error=error[:500], **usage)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class BatchStats:
    """Totals of the cases one run sent to an LLM, for materialization metadata and logs."""

    cases: int
    ok: int
    failed: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    latency_p50_s: float
    latency_p95_s: float
    dropped_actions: int
    errors_by_kind: dict[str, int]

    @classmethod
    def from_results(cls, results: Iterable[CaseResult]) -> "BatchStats":
        results = list(results)
        latencies = [r.latency_s for r in results if r.calls]
        errors = Counter(r.error_kind for r in results if not r.ok)
        return cls(
            cases=len(results),
            ok=sum(r.ok for r in results),
            failed=sum(not r.ok for r in results),
            calls=sum(r.calls for r in results),
            prompt_tokens=sum(r.prompt_tokens for r in results),
            completion_tokens=sum(r.completion_tokens for r in results),
            latency_p50_s=round(percentile(latencies, 50), 4),
            latency_p95_s=round(percentile(latencies, 95), 4),
            dropped_actions=sum(r.dropped_actions for r in results),
            errors_by_kind={str(k): v for k, v in sorted(errors.items(), key=lambda kv: str(kv[0]))},
        )

    def as_metadata(self) -> dict[str, int | float]:
        """Flat numbers, ready for `MaterializeResult(metadata=...)` (prefixed `llm_`)."""
        flat: dict[str, int | float] = {
            "llm_cases": self.cases, "llm_ok": self.ok, "llm_failed": self.failed, "llm_calls": self.calls,
            "llm_prompt_tokens": self.prompt_tokens, "llm_completion_tokens": self.completion_tokens,
            "llm_latency_p50_s": self.latency_p50_s, "llm_latency_p95_s": self.latency_p95_s,
            "llm_dropped_actions": self.dropped_actions,
        }
        flat.update({f"llm_errors_{kind}": n for kind, n in self.errors_by_kind.items()})
        return flat

    def errors_markdown(self) -> str:
        """A Markdown table of failures by kind, for `MetadataValue.md`."""
        if not self.errors_by_kind:
            return "No LLM failures."
        rows = "\n".join(f"| {kind} | {n} |" for kind, n in self.errors_by_kind.items())
        return "| error kind | cases |\n|---|---|\n" + rows
