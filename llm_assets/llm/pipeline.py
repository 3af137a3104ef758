"""Enrichment of curated cases (one run's increment, over one or more days), as pure orchestration
over small callables.

    curated rows -> redact -> cache lookup -> retrieve KB context -> embedding gate
                 -> LLM (or the local strategy) -> fallback for failures -> enriched rows

Nothing is dropped: every input case leaves with exactly one row, and its `route` says what
decided it: `gate` (the embedding gate was confident, no LLM call), `llm` (an LLM answered),
`local` (no LLM configured: rules and the gate's classifier decided), `fallback` (the LLM failed
after retries; rules decided, `fallback_reason` says why). A row served from the result cache
keeps the route of the result it reuses and has `served_from_cache` set. The Dagster asset binds
the callables to resources; the benchmarks call `enrich_cases` directly.

`plan_increment` decides which curated cases a run enriches: the ones enriched does not hold as
they are (anti-join on `event_id` + the curated row's `source_sha256`, which each enriched row keeps),
and the ones whose row a newer production model version should decide (`serving.rows_behind`).

`enrich_by_version` runs one `enrich_cases` per model version when a rollout splits the cases
between two versions (each with its own versions, LLM and cache keys) and merges the runs.
"""

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np
import polars as pl

from llm_assets.llm import local_rules
from llm_assets.llm.cache import cache_key
from llm_assets.llm.injection import injection_suspected
from llm_assets.domain import current_pack
from llm_assets.lib.redaction import redact_remembered
from llm_assets.llm.types import BatchStats, CaseContext, CaseResult

Retriever = Callable[[np.ndarray], list[list[dict]]]  # query vectors -> KB hits per case
Embedder = Callable[[list[str]], np.ndarray]
LLMRunner = Callable[[list[CaseContext]], list[CaseResult]]
CacheLookup = Callable[[list[str]], Mapping[str, Mapping]]  # cache keys -> stored results found
# (event_ids, gate labels) of the gated cases -> indices of those to audit (gate.health.AuditPlan.select)
AuditSelector = Callable[[Sequence[str], Sequence[str]], list[int]]

ROUTES = ("gate", "llm", "local", "fallback")
# The curated row's content hash (curated/cases' column): what an incremental run compares.
SOURCE_HASH = "source_sha256"
# Fallback rows are not cached: the next run tries the LLM again.
CACHED_ROUTES = ("gate", "llm", "local")


@dataclass(frozen=True)
class Versions:
    """The provenance every enriched row carries (and the cache is keyed on)."""

    model_version: str
    prompt_version: str
    kb_index_version: str
    gate_version: str | None = None


@dataclass
class EnrichmentRun:
    rows: list[dict]
    new_cache_rows: list[dict]
    llm_stats: BatchStats  # of the cases sent to an LLM in this run (none with the local strategy)
    routes: Counter  # rows by route, cached or not
    redactions: Counter
    fallback_reasons: Counter
    gate_threshold: float | None  # None: the gate's per-label thresholds
    gated_share: float = 0.0
    llm_calls: int = 0
    routes_from_cache: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)
    uncached: int = 0  # cases decided now (not served from the cache): what gated_share is a share of
    llm_results: list[CaseResult] = field(default_factory=list)  # what llm_stats sums up
    audited: int = 0  # gated cases also sent to the LLM (shadow audit); their calls are in llm_calls
    shut_off: int = 0  # confident gate predictions of a shut-off label, decided by the LLM / local instead

    def calls_per_case(self) -> float:
        return self.llm_calls / len(self.rows) if self.rows else 0.0

    @property
    def served_from_cache(self) -> int:
        return sum(self.routes_from_cache.values())

    def served_from_cache_share(self) -> float:
        return self.served_from_cache / len(self.rows) if self.rows else 0.0

    def route_table(self) -> list[tuple[str, int, int, int]]:
        """(route, decided in this run, served from the cache, total) per route that occurred."""
        return [(route, self.routes[route] - self.routes_from_cache[route], self.routes_from_cache[route],
                 self.routes[route]) for route in ROUTES if self.routes[route]]


def build_contexts(cases: pl.DataFrame) -> tuple[list[CaseContext], Counter]:
    """Redacted `CaseContext`s (PII replaced by typed placeholders) and redaction counts."""
    contexts, counts = [], Counter()
    case_fields = current_pack().case_fields
    for row in cases.iter_rows(named=True):
        redacted = redact_remembered(row.get("payload_raw") or "")  # the prompt's guard finds it done
        counts.update(redacted.counts_by_kind)
        fields = {k: str(row[k]) for k in case_fields if row.get(k) is not None}
        contexts.append(CaseContext(event_id=row["event_id"], text=redacted.text, fields=fields))
    return contexts, counts


@dataclass(frozen=True)
class _Origin:
    """Where a case comes from: its date and the curated row's content hash (None when unknown)."""

    event_date: str
    source_sha256: str | None


def _row(origin: _Origin, ctx: CaseContext, result: CaseResult, route: str, versions: Versions, *,
         input_sha256: str, retrieved_doc_ids: list[str], fallback_reason: str | None = None,
         gate_confidence: float | None = None, served_from_cache: bool = False, route_reason: str | None = None,
         audit: CaseResult | None = None, gate_label: str | None = None) -> dict:
    return {
        "event_id": ctx.event_id,
        "event_date": origin.event_date,
        "source_sha256": origin.source_sha256,
        "summary": result.summary,
        "label": result.label,
        "confidence": float(result.confidence) if result.confidence is not None else None,
        "actions": json.dumps(result.actions or []),
        "severity": int(result.severity) if result.severity is not None else None,
        "route": route,
        "route_reason": route_reason,
        "fallback_reason": fallback_reason,
        "model_version": versions.model_version,
        "prompt_version": versions.prompt_version,
        "kb_index_version": versions.kb_index_version,
        "gate_version": versions.gate_version,
        "gate_confidence": gate_confidence,
        "gate_label": gate_label,  # the gate's prediction, whatever route decided (None: no gate ran on it)
        "retrieved_doc_ids": retrieved_doc_ids,
        "redacted_prompt_sha256": result.redacted_prompt_sha256,
        "input_sha256": input_sha256,
        "llm_calls": result.calls + (audit.calls if audit is not None else 0),
        "served_from_cache": served_from_cache,
        # The shadow audit of a gated case: the production LLM's label (None: not audited, or the call failed).
        "audit_label": audit.label if audit is not None and audit.ok else None,
        "audit_source": "llm" if audit is not None else None,  # sent; a failed audit has no label
        # Text or fields that try to instruct the model (`injection`): never a training example.
        "injection_suspected": injection_suspected(ctx.text, *ctx.fields.values()),
        "enriched_at": datetime.now(timezone.utc),
    }


def _gate_reason(decision) -> str:
    """Why the gate decided a case or left it (a `GateDecision`: label, confidence, gated, threshold)."""
    threshold = getattr(decision, "threshold", None)
    seen = f"{decision.label} {decision.confidence:.3f}"
    if decision.gated:
        return f"gate sure: {seen}" + ("" if threshold is None else f" >= threshold {threshold:.3f}")
    if threshold is None:
        return f"gate unsure: it never serves {decision.label}"
    return f"gate unsure: {seen} < threshold {threshold:.3f}"


def _origins(cases: pl.DataFrame, day: str | None) -> list[_Origin]:
    dates = cases["event_date"].to_list() if "event_date" in cases.columns else [day] * cases.height
    if any(d is None for d in dates):
        raise ValueError("every case needs an event_date: give `day` or an event_date column")
    hashes = cases[SOURCE_HASH].to_list() if SOURCE_HASH in cases.columns else [None] * cases.height
    return [_Origin(str(d), h) for d, h in zip(dates, hashes)]


def plan_increment(curated_keys: pl.DataFrame, stored_keys: pl.DataFrame,
                   re_enrich: Sequence[str] = ()) -> pl.DataFrame:
    """The curated (`event_date`, `event_id`, `source_sha256`) rows enriched does not hold as they are.

    An anti-join on `event_id` + `source_sha256`: a new case, a case whose curated content changed,
    and a row written before enriched kept the hash (null) are enriched; so are the cases of
    `re_enrich` (rows a newer production model version should decide); the rest stay untouched.
    """
    keys = ["event_date", "event_id", SOURCE_HASH]
    if stored_keys.is_empty():
        return curated_keys.select(keys)
    todo = curated_keys.select(keys).join(stored_keys.select(keys).unique(), on=keys, how="anti",
                                          nulls_equal=False)
    if len(re_enrich):
        todo = pl.concat([todo, curated_keys.select(keys).filter(
            pl.col("event_id").is_in(list(re_enrich)) & ~pl.col("event_id").is_in(todo["event_id"].implode()))])
    return todo


def align_results(cases: Sequence[CaseContext], results: Sequence[CaseResult], origin: str) -> list[CaseResult]:
    """One result per case, in case order; a case without a result gets a flagged one (never dropped)."""
    if len(results) == len(cases) and all(r.event_id == c.event_id for r, c in zip(results, cases)):
        return list(results)
    by_id: dict[str, list[CaseResult]] = {}
    for r in results:
        by_id.setdefault(r.event_id, []).append(r)
    return [by_id[c.event_id].pop(0) if by_id.get(c.event_id)
            else CaseResult.failed(c.event_id, "backend_error", f"{origin} returned no result for this case")
            for c in cases]


def _from_cache(ctx: CaseContext, cached: Mapping) -> CaseResult:
    return CaseResult(event_id=ctx.event_id, summary=cached["summary"], label=cached["label"],
                      confidence=cached["confidence"], actions=json.loads(cached["actions"]),
                      severity=cached["severity"], ok=True,
                      redacted_prompt_sha256=cached["redacted_prompt_sha256"])


def enrich_cases(
    cases: pl.DataFrame,
    *,
    day: str | None = None,
    versions: Versions,
    retrieve: Retriever,
    embed: Embedder,
    gate=None,
    gate_threshold: float | None = None,
    llm: LLMRunner | None = None,
    cache_lookup: CacheLookup | None = None,
    shut_off: Mapping[str, str] | None = None,
    audit: AuditSelector | None = None,
) -> EnrichmentRun:
    """Enrich `cases` (rows of `curated/cases`); `llm=None` means no LLM: the local strategy decides.

    The cases may span several dates (a partition-range run sends them as one batch): each row's
    `event_date` is its case's `event_date`, else `day`. Each row keeps the case's `source_sha256`.

    `shut_off`: labels the gate no longer serves (label -> the reason rows carry): a confident
    prediction of one goes to the LLM (or the local strategy) and is not served from a gated cached
    result. `audit`: which gated cases the LLM also answers (shadow audit; with an LLM only): they
    go in the same LLM batch, keep `route = gate` and record `audit_label` / `audit_source`.
    Every row says why it took its route (`route_reason`).
    """
    shut_off = dict(shut_off or {})
    contexts, redactions = build_contexts(cases)
    origins = _origins(cases, day)
    input_hashes = [local_rules.input_sha256(c) for c in contexts]
    keys = [cache_key(h, versions.model_version, versions.prompt_version, versions.kb_index_version)
            for h in input_hashes]
    cache = cache_lookup(keys) if cache_lookup else {}

    rows: dict[int, dict] = {}
    routes, reasons, from_cache = Counter(), Counter(), Counter()
    todo = []
    for i, ctx in enumerate(contexts):
        cached = cache.get(keys[i])
        # A gated result of a label the gate no longer serves is decided again, not reused.
        usable = cached is not None and cached.get("source_route") in CACHED_ROUTES and not (
            cached["source_route"] == "gate" and cached.get("label") in shut_off)
        if usable:
            # The cached result's route: what decided the content, not where it was read from.
            rows[i] = _row(origins[i], ctx, _from_cache(ctx, cached), cached["source_route"], versions,
                           input_sha256=input_hashes[i], retrieved_doc_ids=list(cached["retrieved_doc_ids"] or []),
                           served_from_cache=True,
                           route_reason=f"served from the result cache (decided by {cached['source_route']})")
            from_cache[cached["source_route"]] += 1
        else:
            todo.append(i)

    # One embedding per uncached case serves both the KB search and the gate.
    vectors = embed([contexts[i].text for i in todo]) if todo else np.zeros((0, 0), dtype=np.float32)
    retrieved = retrieve(vectors) if todo else []
    for i, hits in zip(todo, retrieved):
        contexts[i] = CaseContext(contexts[i].event_id, contexts[i].text, contexts[i].fields, list(hits))
    doc_ids = {i: [h["doc_id"] for h in contexts[i].retrieved] for i in todo}

    predictions: dict[int, tuple[str, float]] = {}
    confident: set[int] = set()
    why: dict[int, str] = {i: "no gate serving" for i in todo}
    shut: list[int] = []
    if todo and gate is not None:
        # The gate's per-label thresholds decide (`gate_threshold`, when given, overrides them all).
        for i, d in zip(todo, gate.decide(vectors, threshold=gate_threshold)):
            predictions[i] = (d.label, d.confidence)
            if d.gated and d.label in shut_off:
                why[i] = shut_off[d.label]
                shut.append(i)
            else:
                if d.gated:
                    confident.add(i)
                why[i] = _gate_reason(d)
    shut_set = set(shut)

    gated = [i for i in todo if i in confident]
    undecided = [i for i in todo if i not in set(gated)]
    audited = ([gated[k] for k in audit([contexts[i].event_id for i in gated], [predictions[i][0] for i in gated])]
               if (llm is not None and audit is not None and gated) else [])

    gate_results = dict(zip(gated, local_rules.enrich_locally([contexts[i] for i in gated],
                                                              [predictions[i] for i in gated])))

    def local(indices: list[int]) -> list[CaseResult]:
        # The gate's classifier, except on a label it no longer serves (the pack's keyword rules there).
        preds = [local_rules.keyword_label(contexts[i].text) if i in shut_set else predictions[i]
                 for i in indices] if gate is not None else None
        return local_rules.enrich_locally([contexts[i] for i in indices], preds)

    if llm is None:  # no LLM configured: the local strategy decides what the gate did not
        for i, result in zip(undecided, local(undecided)):
            rows[i] = _row(origins[i], contexts[i], result, "local", versions, input_sha256=input_hashes[i],
                           retrieved_doc_ids=doc_ids[i], gate_confidence=predictions.get(i, (None, None))[1],
                           gate_label=predictions.get(i, (None, None))[0],
                           route_reason=why[i])
    # One LLM batch: the undecided cases and the audited gated ones (an audit adds no round trip of its own).
    sent = [contexts[i] for i in undecided + audited]
    answers = align_results(sent, llm(sent), "the LLM strategy") if (llm and sent) else []
    llm_results, audits = answers[:len(undecided)], dict(zip(audited, answers[len(undecided):]))
    for i, result in gate_results.items():
        rows[i] = _row(origins[i], contexts[i], result, "gate", versions, input_sha256=input_hashes[i],
                       retrieved_doc_ids=doc_ids[i], gate_confidence=predictions[i][1], gate_label=predictions[i][0],
                       route_reason=why[i],
                       audit=audits.get(i))
    failed = [i for i, r in zip(undecided, llm_results) if not r.ok]
    fallbacks = dict(zip(failed, local(failed)))
    for i, result in zip(undecided, llm_results):
        gate_label, gate_conf = predictions.get(i, (None, None))
        if result.ok:
            rows[i] = _row(origins[i], contexts[i], result, "llm", versions, input_sha256=input_hashes[i],
                           retrieved_doc_ids=doc_ids[i], gate_confidence=gate_conf, gate_label=gate_label,
                           route_reason=why[i])
        else:
            reason = f"{result.error_kind}: {result.error}" if result.error else str(result.error_kind)
            reasons[result.error_kind] += 1
            fb = fallbacks[i]
            # The failed attempt's usage and prompt hash stay on the row: it explains the fallback.
            fb = replace(fb, calls=result.calls,
                         redacted_prompt_sha256=result.redacted_prompt_sha256 or fb.redacted_prompt_sha256)
            rows[i] = _row(origins[i], contexts[i], fb, "fallback", versions, input_sha256=input_hashes[i],
                           retrieved_doc_ids=doc_ids[i], fallback_reason=reason, gate_confidence=gate_conf,
                           gate_label=gate_label,
                           route_reason=why[i])

    ordered = [rows[i] for i in range(len(contexts))]
    routes.update(r["route"] for r in ordered)
    new_cache = [
        {"cache_key": keys[i], **{k: ordered[i][k] for k in ("summary", "label", "confidence", "actions", "severity",
                                                            "retrieved_doc_ids", "redacted_prompt_sha256",
                                                            "input_sha256", "model_version", "prompt_version",
                                                            "kb_index_version")},
         "source_route": ordered[i]["route"], "cached_at": ordered[i]["enriched_at"]}
        for i in todo if ordered[i]["route"] in CACHED_ROUTES
    ]
    return EnrichmentRun(
        rows=ordered, new_cache_rows=new_cache, llm_stats=BatchStats.from_results(llm_results),
        routes=routes, redactions=redactions, fallback_reasons=reasons, gate_threshold=gate_threshold,
        gated_share=len(gated) / len(todo) if todo else 0.0,
        llm_calls=sum(r.calls for r in answers), routes_from_cache=from_cache,
        uncached=len(todo), llm_results=list(llm_results), audited=len(audited), shut_off=len(shut),
    )


@dataclass(frozen=True)
class Strategy:
    """What decides the cases of one model version: the provenance its rows carry (and its cache
    keys), and its LLM (None: the local strategy, rules plus the gate's classifier)."""

    versions: Versions
    llm: LLMRunner | None = None


def enrich_by_version(cases: pl.DataFrame, *, served_by: Sequence[Hashable], strategies: Mapping[Hashable, Strategy],
                      **common) -> EnrichmentRun:
    """Enrich each case with the strategy of the model version that serves it (`served_by[i]` for
    case i, a key of `strategies`): one `enrich_cases` per version, merged into one run whose rows
    keep the cases' order. `common` goes to every `enrich_cases` (retrieve, embed, gate, cache...).

    A rollout serves a share of the cases with the new version and the rest with the previous one;
    each version has its own `model_version` / `prompt_version`, so its cache keys are its own.
    """
    if len(served_by) != cases.height:
        raise ValueError(f"served_by has {len(served_by)} entries for {cases.height} cases")
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(served_by):
        groups.setdefault(key, []).append(i)
    runs = [(indices, enrich_cases(cases[indices], versions=strategies[key].versions, llm=strategies[key].llm,
                                   **common))
            for key, indices in groups.items()]
    if len(runs) == 1:
        return runs[0][1]
    rows: list[dict | None] = [None] * cases.height
    for indices, run in runs:
        for i, row in zip(indices, run.rows):
            rows[i] = row
    parts = [run for _, run in runs]
    uncached = sum(r.uncached for r in parts)
    llm_results = [result for r in parts for result in r.llm_results]
    return EnrichmentRun(
        rows=[r for r in rows if r is not None], new_cache_rows=[c for r in parts for c in r.new_cache_rows],
        llm_stats=BatchStats.from_results(llm_results), routes=sum((r.routes for r in parts), Counter()),
        redactions=sum((r.redactions for r in parts), Counter()),
        fallback_reasons=sum((r.fallback_reasons for r in parts), Counter()), gate_threshold=parts[0].gate_threshold,
        gated_share=sum(r.gated_share * r.uncached for r in parts) / uncached if uncached else 0.0,
        llm_calls=sum(r.llm_calls for r in parts), routes_from_cache=sum((r.routes_from_cache for r in parts), Counter()),
        uncached=uncached, llm_results=llm_results, audited=sum(r.audited for r in parts),
        shut_off=sum(r.shut_off for r in parts),
    )


ENRICHED_SCHEMA = {
    "event_id": pl.String, "event_date": pl.String, SOURCE_HASH: pl.String, "summary": pl.String,
    "label": pl.String,
    "confidence": pl.Float64, "actions": pl.String, "severity": pl.Int32, "route": pl.String,
    "route_reason": pl.String, "fallback_reason": pl.String, "model_version": pl.String, "prompt_version": pl.String,
    "kb_index_version": pl.String, "gate_version": pl.String, "gate_confidence": pl.Float64,
    "retrieved_doc_ids": pl.List(pl.String), "redacted_prompt_sha256": pl.String, "input_sha256": pl.String,
    "llm_calls": pl.Int32, "served_from_cache": pl.Boolean, "audit_label": pl.String, "audit_source": pl.String,
    "gate_label": pl.String, "injection_suspected": pl.Boolean,
    "enriched_at": pl.Datetime("us", "UTC"),
    # The content version (audit.row_sha256 of the decision fields), set by enriched/cases when it writes.
    "row_sha256": pl.String,
}
CACHE_SCHEMA = {
    "cache_key": pl.String, "summary": pl.String, "label": pl.String, "confidence": pl.Float64,
    "actions": pl.String, "severity": pl.Int32, "retrieved_doc_ids": pl.List(pl.String),
    "redacted_prompt_sha256": pl.String, "input_sha256": pl.String, "model_version": pl.String,
    "prompt_version": pl.String, "kb_index_version": pl.String, "source_route": pl.String,
    "cached_at": pl.Datetime("us", "UTC"),
}


def rows_frame(rows: Sequence[dict], schema: Mapping) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=dict(schema))
