"""The asset of the enrichment domain: `enriched/cases` (the embedding gate is `llm_assets/gate/`).

`enriched/cases` is a thin shell around `pipeline.enrich_by_version`: it picks the curated cases its
dates do not hold yet, and the rows a newer production model version should decide
(`pipeline.plan_increment`, `serving.rows_behind`), enriches them in one batch per model version
(`models/production` and its rollout, `serving`), MERGEs them (one commit for all its dates),
writes the cache and a signed audit bundle per date covering exactly them, publishes exactly them
to `cases.enriched` once the Delta write and its blocking checks passed, and reports the checks
per date.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets import settings
from llm_assets.asset_keys import (
    CURATED_CASES,
    EMBEDDING_GATE,
    ENRICHED_CASES,
    KB_INDEX,
    MODELS_PRODUCTION,
    RESULT_CACHE,
)
from llm_assets.automation import DEFAULT_LOOKBACK_DAYS, build_daily_derived, build_refresh_after_update_of
from llm_assets import failpoints
from llm_assets.enrichment import audit, outbox, quality, serving
from llm_assets.gate import health as gate_health
from llm_assets.gate.assets import gate_for_run, serving_gate_version
from llm_assets.lib import plots
from llm_assets.lib.redaction import redact_cached
from llm_assets.llm import llm_enricher, model_versions, pipeline
from llm_assets.knowledge_base.retrieval import current_kb_index_version, retrieve_by_vectors
from llm_assets.metadata import frame_table, is_micro_batch, markdown_table
from llm_assets.models import production as production_record
from llm_assets.models.production import ProductionState
from llm_assets.models import registry as model_registry
from llm_assets.models.registry import RegisteredModel, RegistryError
from llm_assets.partitions import (
    check_outputs,
    daily_partitions,
    partition_check_evaluation,
    target_materializations,
)
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.kafka import KafkaResource
from llm_assets.resources.llm import LLMResource, LLMServerUnavailable
from llm_assets.resources.milvus import MilvusResource
from llm_assets.resources.signing import AuditSigner

# Days back that a promotion in models/production re-enriches through automation (older days: a backfill).
REENRICHMENT_LOOKBACK_DAYS = DEFAULT_LOOKBACK_DAYS


class EnrichmentConfig(dg.Config):
    gate_threshold: float | None = Field(
        default=None, description="one gate confidence that skips the LLM for every label; empty: the gate's "
                                  "per-label thresholds, calibrated for its target precision")
    use_gate: bool = Field(default=True, description="false: every uncached case goes to the LLM")
    use_cache: bool = Field(default=True, description="false: ignore the result cache (still refreshes it)")
    top_k: int = Field(default=4, description="KB chunks retrieved per case")
    max_fallback_rate: float = Field(default=0.05, description="above it the fallback-rate check warns")
    publish: bool = Field(default=True, description="publish to cases.enriched what the outbox has not published "
                                                    "yet; false: audit only, a later run of the date publishes")
    call_mode: str = Field(default="combined", description="combined: one LLM call per case; per_skill: three "
                                                           "(summarize, classify, propose actions); before the "
                                                           "first promotion only (a registry version has its own)")
    registry_path: str = Field(default="", description="model registry YAML that production's versions are looked "
                                                       "up in; empty = llm_assets/models/registry.yaml")
    audit_share: float = Field(
        default=gate_health.DEFAULT_AUDIT_SHARE,
        description="share of gated cases (by a hash of event_id) the LLM also answers, to measure the gate's "
                    "precision on live traffic (with an LLM only); 0: none beyond the per-label minimum")
    min_audits_per_label_per_day: int = Field(
        default=gate_health.DEFAULT_MIN_AUDITS_PER_LABEL_PER_DAY,
        description="gated cases audited per label and day at least (when it gates that many)")
    max_audit_share: float = Field(
        default=gate_health.DEFAULT_MAX_AUDIT_SHARE_OF_BATCH,
        description="at most this share of a batch's gated cases is audited (the audit's cost bound)")
    gate_shutoff: bool = Field(
        default=True, description="stop gating a label once its audits show (Wilson 95% upper bound) that its "
                                  "precision is under the gate's target")
    min_audits_to_judge: int = Field(default=gate_health.DEFAULT_MIN_AUDITS,
                                     description="audits a label needs before the shut-off judges it")
    full_refresh: bool = Field(
        default=False,
        description="Re-enrich every curated case of the run's dates (changed signal tables, a prompt edited in "
                    "place) and replace each date, instead of enriching only the cases that are new, changed or "
                    "behind the model, gate and KB index versions serving now (those any run catches up). Cache "
                    "hits keep their route with served_from_cache; rows whose content changed are published and "
                    "audited again.")


def _check_spec(name: str, description: str, *, blocking: bool = True, **kwargs) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=ENRICHED_CASES, blocking=blocking, partitions_def=daily_partitions,
                             description=description, **kwargs)


# Content checks judge the rows a run wrote and the rows it audits and publishes (an earlier run's
# left in the outbox by a crash are judged before they leave it; the rest were judged by their runs);
# partition checks judge the whole date. Both read the enriched/cases version the run wrote.
ENRICHED_CHECKS = [
    _check_spec("labels_and_confidence_valid", "Every label is one of the five, every confidence in [0, 1]."),
    _check_spec("actions_within_allow_list", "At most 3 actions, verbs and approval levels from the allow-list."),
    _check_spec("provenance_versions_present", "model_version, prompt_version and kb_index_version on every row."),
    _check_spec("no_pii_in_outputs", "No email, card, phone, IBAN or national id in summary or actions."),
    _check_spec("one_row_per_curated_case", "Exactly one enriched row per curated case of the date (the curated "
                "version the run read): nothing dropped or duplicated.", additional_deps=[CURATED_CASES]),
    _check_spec("fallback_rate_below_threshold", "Share of the date's cases on the fallback route (WARN above the "
                "configured rate).", blocking=False),
    _check_spec("routes_say_what_decided", "Every route is gate, llm, local or fallback; a fallback says why; gate "
                "and local rows made no LLM call; served_from_cache is set."),
]
PARTITION_CHECKS = ("one_row_per_curated_case", "fallback_rate_below_threshold")
WARN_CHECKS = ("fallback_rate_below_threshold",)


def _evaluate(written: pl.DataFrame, partition: pl.DataFrame, curated_ids: pl.Series,
              max_fallback_rate: float) -> dict[str, tuple[bool, dict]]:
    """(passed, details) per check: content checks on `written`, partition checks on `partition`."""
    return {
        "labels_and_confidence_valid": quality.label_and_confidence_valid(written),
        "actions_within_allow_list": quality.actions_allowed(written),
        "provenance_versions_present": quality.versions_present(written),
        "no_pii_in_outputs": quality.no_pii_in_outputs(written),
        "one_row_per_curated_case": quality.one_row_per_case(partition, curated_ids),
        "fallback_rate_below_threshold": quality.fallback_rate(partition, max_fallback_rate),
        "routes_say_what_decided": quality.routes_say_what_decided(written),
    }


def _cached_results(delta: DeltaLakeStorage, keys: list[str]) -> dict[str, dict]:
    """The stored results for `keys` (a filtered scan: the cache grows across partitions)."""
    found = delta.read_where(RESULT_CACHE, "cache_key", keys)
    return {r["cache_key"]: r for r in found.to_dicts()} if found.height else {}


def rows_behind_dependencies(stored: pl.DataFrame, gate_version: str | None, kb_version: str) -> pl.DataFrame:
    """Stored rows decided without the gate or the KB index that serve now: a row enriched before
    the gate existed or with an older gate (`gate_version` differs while a gate serves), or with
    another (or no) KB index version while one serves. Any run of their date enriches them again,
    and automation runs the lookback's dates after each update of either, so rows catch up."""
    stale = pl.lit(False)
    if gate_version is not None:
        stale = stale | pl.col("gate_version").is_null() | (pl.col("gate_version") != gate_version)
    if kb_version != "none":
        stale = stale | pl.col("kb_index_version").is_null() | (pl.col("kb_index_version") != kb_version)
    return stored.filter(stale)


@dataclass
class _DateOutcome:
    """One date of a run: what it wrote, and the snapshot its checks judged."""

    day: str
    curated_rows: int
    new: int                     # cases enriched does not hold yet
    changed: int                 # cases whose curated content changed (or rows without a hash)
    rows: list[dict]             # the rows written (every case of the date on a full refresh)
    deleted: int
    version_written: int | None  # the enriched/cases commit of this date; None when nothing was written
    version_checked: int | None  # the version the checks judged: the one written, else the one read
    partition_rows: int
    evaluations: dict[str, tuple[bool, dict]]
    re_enriched: int = 0         # rows written again because another model version serves them now
    caught_up: int = 0           # rows written again because another gate or KB index version serves now
    version_mix: list[tuple] = field(default_factory=list)  # serving.version_mix of the date's snapshot
    behind: int = 0              # rows of the snapshot another model version serves (the next run's work)
    bundle_uri: str | None = None
    published: int = 0
    outbox_rows: list[dict] = field(default_factory=list)  # rows to audit/publish: this run's and earlier runs' left over
    drained: "outbox.Drained | None" = None

    def blocking_failures(self) -> list[str]:
        return [name for name, (passed, _) in self.evaluations.items() if not passed and name not in WARN_CHECKS]


def _keys(delta: DeltaLakeStorage, key: dg.AssetKey, version: int | None, days: list[str],
          extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """(event_date, event_id, source_sha256, *extra) of the dates at `version`; a null hash where the
    table has no hash column yet (an enriched table from before: those rows are enriched once more)."""
    schema = {"event_date": pl.String, "event_id": pl.String, pipeline.SOURCE_HASH: pl.String,
              **{name: pl.String for name in extra}}
    if version is None:
        return pl.DataFrame(schema=schema)
    scan = delta.scan(key, version=version)
    hashed = pipeline.SOURCE_HASH in scan.collect_schema().names()
    hash_column = pl.col(pipeline.SOURCE_HASH) if hashed else pl.lit(None, dtype=pl.String).alias(pipeline.SOURCE_HASH)
    return (scan.filter(pl.col("event_date").is_in(days)).select("event_date", "event_id", hash_column, *extra)
            .collect())


def _curated_rows(delta: DeltaLakeStorage, version: int | None, todo: pl.DataFrame) -> pl.DataFrame:
    """The full curated rows (at `version`) of the cases to enrich: only those are read."""
    if version is None or todo.is_empty():
        return pl.DataFrame()
    scan = delta.scan(CURATED_CASES, version=version)
    days = todo["event_date"].unique().to_list()
    return (scan.filter(pl.col("event_date").is_in(days) & pl.col("event_id").is_in(todo["event_id"].to_list()))
            .collect().sort("event_date", "event_id"))


def _with_row_hashes(rows: list[dict]) -> list[dict]:
    """The rows as Delta stores them (the schema's types), each with its content version `row_sha256`."""
    frame = pipeline.rows_frame(rows, pipeline.ENRICHED_SCHEMA)
    hashed = frame.to_dicts()
    for row in hashed:
        row[outbox.ROW_HASH] = audit.row_sha256(row)
    return hashed


def _hash_column(scan: pl.LazyFrame) -> pl.Expr:
    """`row_sha256` as stored; null for rows written before the column existed (hashed from the row then)."""
    if outbox.ROW_HASH in scan.collect_schema().names():
        return pl.col(outbox.ROW_HASH)
    return pl.lit(None, dtype=pl.String).alias(outbox.ROW_HASH)


def _partition_snapshots(delta: DeltaLakeStorage, version_by_day: dict[str, int | None]) -> dict[str, pl.DataFrame]:
    """Each date at its version: (event_id, route, model_version, row_sha256) of every row; one scan per version."""
    empty = pl.DataFrame(schema={k: pipeline.ENRICHED_SCHEMA[k] for k in
                                 ("event_id", "route", "model_version", outbox.ROW_HASH)})
    found = {day: empty for day, version in version_by_day.items() if version is None}
    for version in {v for v in version_by_day.values() if v is not None}:
        group = [day for day, v in version_by_day.items() if v == version]
        scan = delta.scan(ENRICHED_CASES, version=version).filter(pl.col("event_date").is_in(group))
        partition = scan.select("event_date", "event_id", "route", "model_version", _hash_column(scan)).collect()
        unhashed = partition.filter(pl.col(outbox.ROW_HASH).is_null())["event_id"].to_list()
        if unhashed:  # older rows: hash them as stored (read in full only those)
            hashes = {r["event_id"]: audit.row_sha256(r) for r in
                      scan.filter(pl.col("event_id").is_in(unhashed)).collect().to_dicts()}
            partition = partition.with_columns(pl.col(outbox.ROW_HASH).fill_null(
                pl.col("event_id").replace_strict(hashes, default=None, return_dtype=pl.String)))
        for day in group:
            found[day] = partition.filter(pl.col("event_date") == day).drop("event_date")
    return found


def _rows_at(delta: DeltaLakeStorage, version_by_day: dict[str, int | None],
             ids_by_day: dict[str, set[str]]) -> dict[str, pl.DataFrame]:
    """The full rows of `ids_by_day` at each date's version (what the content checks judge and the
    outbox audits and publishes), with `row_sha256` filled in; one scan per version."""
    empty = pl.DataFrame(schema=pipeline.ENRICHED_SCHEMA)
    found = {day: empty for day in version_by_day}
    for version in {v for v in version_by_day.values() if v is not None}:
        group = [day for day, v in version_by_day.items() if v == version and ids_by_day.get(day)]
        if not group:
            continue
        ids = sorted(set().union(*(ids_by_day[day] for day in group)))
        scan = delta.scan(ENRICHED_CASES, version=version)
        rows = scan.filter(pl.col("event_date").is_in(group) & pl.col("event_id").is_in(ids)).select(
            pl.all().exclude(outbox.ROW_HASH), _hash_column(scan)).collect()
        if rows[outbox.ROW_HASH].null_count():
            rows = rows.with_columns(pl.Series(outbox.ROW_HASH, [r[outbox.ROW_HASH] or audit.row_sha256(r)
                                                                for r in rows.to_dicts()], dtype=pl.String))
        for day in group:
            found[day] = rows.filter(pl.col("event_date") == day).sort("event_id")
    return found


def _run_has_ended(instance: dg.DagsterInstance):
    """`is_finished(run_id)`: the run has ended (or the instance does not know it); memoized per run."""
    known: dict[str, bool] = {}

    def is_finished(run_id: str) -> bool:
        if run_id not in known:
            run = instance.get_run_by_id(run_id) if run_id else None
            known[run_id] = run is None or run.is_finished
        return known[run_id]
    return is_finished


IN_FLIGHT_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _days_other_runs_may_write(context: dg.AssetExecutionContext, days: list[str]) -> set[str]:
    """The run's dates that another run in flight may write to enriched/cases (its partition or range
    covers them): their outbox is left to that run, this one drains only its own rows there."""
    shared: set[str] = set()
    for run in context.instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT_STATUSES)):
        if run.run_id == context.run.run_id or (run.asset_selection is not None
                                                and ENRICHED_CASES not in run.asset_selection):
            continue
        single = run.tags.get("dagster/partition")
        first = run.tags.get("dagster/asset_partition_range_start", single)
        last = run.tags.get("dagster/asset_partition_range_end", single)
        shared.update(d for d in days if first is None or first <= d <= (last or first))
    return shared


def _registered_versions(config: EnrichmentConfig, history: pl.DataFrame,
                         names: set[str]) -> dict[str, RegisteredModel]:
    """The registry entries of the production versions this run serves, as they were promoted.

    A name the registry lost, a version whose content changed since its promotion (versions are
    immutable) or whose prompts the code no longer builds fails the run before anything is
    written: enriching with something else under the promoted name would falsify provenance.
    """
    if not names:  # nothing promoted: the registry is not read at all
        return {}
    try:
        registry = model_registry.load_registry(config.registry_path or None)
    except RegistryError as exc:
        raise dg.Failure(f"models/production serves {sorted(names)}, but the model registry cannot be read: "
                         f"{exc}") from exc
    found = {}
    for name in sorted(names):
        if name not in registry:
            raise dg.Failure(f"models/production serves {name}, which the model registry does not hold "
                             f"({config.registry_path or 'llm_assets/models/registry.yaml'}): restore its entry "
                             f"or promote (roll back to) another version")
        model = registry[name]
        promoted = history.filter(pl.col("version") == name)["registry_fingerprint"].drop_nulls()
        try:
            model_registry.check_runnable(model)
            model_registry.check_unchanged(model, promoted[-1] if promoted.len() else None)
        except RegistryError as exc:
            raise dg.Failure(f"models/production serves {name}, but it cannot run as promoted: {exc}") from exc
        found[name] = model
    return found


def _transport(model: RegisteredModel, llm: LLMResource) -> LLMResource:
    """The transport of a registry version: the run's own `llm` when it points at the same server
    and model, else one with its tuning aimed at the version's endpoint, checked like the run's
    own transport is at setup (a server that is down fails the run before anything is written)."""
    base_url = model_registry.resolve_endpoint(model)
    if model.backend == "server" and not base_url:
        raise dg.Failure(f"production model version {model.name} is served at {model.endpoint}, which is not set "
                         f"here: set it, or promote (roll back to) another version")
    transport = llm.with_endpoint(model.backend, base_url, model.model)
    if transport is not llm and model.backend == "server":
        try:
            transport.check_health()
        except LLMServerUnavailable as exc:
            raise dg.Failure(f"production model version {model.name}: {exc}") from exc
    return transport


@dataclass
class _Serving:
    """What decides this run's cases: per model version that serves some of them (a registry name,
    or None for the env-derived backend), its strategy, its backend and its transport."""

    strategies: dict[str | None, pipeline.Strategy]
    backends: dict[str | None, str]
    transports: dict[str | None, LLMResource]
    gate_version: str | None = None
    gate_labels: tuple[str, ...] = ()
    gate_target: float = gate_health.DEFAULT_TARGET_PRECISION
    min_audits: int = gate_health.DEFAULT_MIN_AUDITS
    shut_off: dict[str, str] = field(default_factory=dict)  # labels the serving gate no longer serves

    def versions(self) -> dict[str | None, pipeline.Versions]:
        return {key: strategy.versions for key, strategy in self.strategies.items()}


def _bind_pipeline(context: dg.AssetExecutionContext, config: EnrichmentConfig, delta: DeltaLakeStorage,
                   llm: LLMResource, milvus: MilvusResource, embedder: EmbedderResource, artifacts: ArtifactStore,
                   batches: list[int], history: pl.DataFrame, served: set[str | None], kb_version: str,
                   days: list[str]):
    """What serves the run's cases (`_Serving`) and `enrich(cases, served_by)`, bound to the resources
    (only when there is work: an empty increment opens neither Milvus nor an LLM).

    `served`: the model versions the cases need (`serving.served_by`). None is the env-derived
    backend (nothing promoted yet): `llm` as configured, `call_mode` from the run config. A
    registry version brings its own backend, endpoint, model, call mode and generation parameters.
    """
    gate = gate_for_run(context, artifacts) if config.use_gate else None
    gate_version = gate.version if gate else None
    shut_off = gate_health.read_shutoffs(delta, gate_version) if config.gate_shutoff else {}
    for label, reason in shut_off.items():
        context.log.info(f"not gating {label}: {reason}")
    labels = tuple(gate.labels) if gate else ()
    target = gate_health.gate_target(gate) if gate else gate_health.DEFAULT_TARGET_PRECISION
    audit_plan = gate_health.plan_audits(
        delta, gate, days, share=config.audit_share, max_share=config.max_audit_share,
        per_label_per_day=config.min_audits_per_label_per_day, min_audits=config.min_audits_to_judge) if gate else None
    registered = _registered_versions(config, history, {name for name in served if name is not None})

    def counted(enricher: llm_enricher.LLMEnricher):
        def send_to_llm(cases):
            batches.append(len(cases))  # one batch per model version and run, whatever the number of dates
            return enricher(cases)
        return send_to_llm

    strategies, backends, transports = {}, {}, {}
    for key in sorted(served, key=lambda k: k or ""):
        if key is None:
            named = model_versions.versions_for(llm_enricher.describe(llm, call_mode=config.call_mode,
                                                                      gate_version=gate_version))
            versions = pipeline.Versions(model_version=named.model_version, prompt_version=named.prompt_version,
                                         kb_index_version=kb_version, gate_version=gate_version)
            transport = llm if llm.configured else None
            enricher = llm_enricher.LLMEnricher(llm, call_mode=config.call_mode) if transport else None
            backends[key] = llm_enricher.model_backend(llm)
        else:
            model = registered[key]
            versions = pipeline.Versions(model_version=model_registry.row_model_version(model, gate_version),
                                         prompt_version=model_registry.row_prompt_version(model),
                                         kb_index_version=kb_version,
                                         gate_version=gate_version)
            transport = None if model.backend == "local" else _transport(model, llm)
            enricher = llm_enricher.LLMEnricher(transport, call_mode=model.call_mode, max_tokens=model.max_tokens,
                                                temperature=model.temperature) if transport else None
            backends[key] = model.backend
        strategies[key] = pipeline.Strategy(versions, counted(enricher) if enricher else None)
        if transport is not None:
            transports[key] = transport

    def retrieve_context(vectors) -> list[list[dict]]:
        hits = retrieve_by_vectors(milvus, vectors, top_k=config.top_k)
        return [[{"doc_id": h.doc_id, "type": h.type, "label": h.label, "content": redact_cached(h.content)}
                 for h in chunk_hits] for chunk_hits in hits]

    def enrich(cases: pl.DataFrame, served_by: list[str | None]) -> pipeline.EnrichmentRun:
        return pipeline.enrich_by_version(
            cases, served_by=served_by, strategies=strategies, retrieve=retrieve_context, embed=embedder.encode,
            gate=gate, gate_threshold=config.gate_threshold, shut_off=shut_off, audit=audit_plan.select if audit_plan else None,
            cache_lookup=(lambda keys: _cached_results(delta, keys)) if config.use_cache else None)

    return _Serving(strategies, backends, transports, gate_version, labels, target, config.min_audits_to_judge,
                    shut_off), enrich


ENRICHED_DESCRIPTION = """Curated cases with a summary, a label and confidence, severity and allowed next actions.

Incremental: a run enriches only the curated cases of its dates that `enriched/cases` does not
hold as they are (anti-join on `event_id` + the curated row's `source_sha256`, kept on each
enriched row), MERGEs them on `event_id` (one MERGE for all its dates), then audits (a signed bundle per date)
and publishes to `cases.enriched` what the outbox `enrichment/outbox` has not recorded yet: its
own rows and any an earlier run left undone (killed, a broker outage), once, after the write and
its blocking checks passed. Rows already written are never rewritten: their route, `enriched_at`
and provenance stay. A run with nothing new calls no LLM, publishes nothing and writes no
bundle. Rows decided by another model version, gate or KB index than the ones serving now
are enriched again by any run of their date (a backfill with no config catches a range up).
`full_refresh` re-enriches and replaces every case of the dates, publishing and auditing the
rows whose content changed. A run may cover a date
range: all its dates' cases go to the LLM as one batch.

Per case, the cheapest way that is good enough, and `route` says which decided the row:
`gate` (the embedding gate is confident: no LLM call), `llm` (vLLM answered, with KB
context), `local` (no `LLM_BASE_URL`: rules and the gate's classifier decide), `fallback`
(the LLM failed after retries: rules decide, and `fallback_reason` says why). A case whose
redacted input and model, prompt and KB index versions are unchanged is served from the
result cache with its original route and `served_from_cache` set, without new work.
PII is redacted before anything else sees the text. The checks are evaluated here per date,
on the `enriched/cases` version written and the `curated/cases` version read.

Enrichment follows production: once a version of the model registry was promoted in
`models/production`, it decides the cases (its backend, endpoint, model, prompts and
parameters; `model_version` starts with its registry name). During a gradual rollout at share
s, the cases whose `event_id` hash falls in s get the new version and the rest keep the
previous one (the same cases on every run). Rows that another version serves now (after a
promotion, a rollback or a larger share) are enriched again by the next run of their date,
and a promotion makes automation run the days of the last 7 (older days: a backfill); the
other rows stay as they are. Before the first promotion the environment decides
(`LLM_BASE_URL` set: the server, else the local strategy). The `model_versions` table of the
metadata shows the split per date and the rows still behind.
"""


@dg.multi_asset(
    name="enriched__cases",
    specs=[dg.AssetSpec(
        ENRICHED_CASES,
        # models/production is read when present (nothing promoted yet: the env-derived backend), so its
        # absence holds nothing back, and a promotion re-enriches the lookback's days (older: a backfill).
        deps=[CURATED_CASES, KB_INDEX, EMBEDDING_GATE, MODELS_PRODUCTION],
        partitions_def=daily_partitions,
        kinds={"vllm", "milvus", "delta", "kafka"},
        group_name="enrichment",
        description=ENRICHED_DESCRIPTION,
        automation_condition=(
            build_daily_derived(ignore_updates_of=[KB_INDEX, EMBEDDING_GATE, MODELS_PRODUCTION],  # versions: below
                                may_be_missing=[MODELS_PRODUCTION])
            # A new production version, gate or KB index: the lookback's days catch up (their rows behind it).
            | build_refresh_after_update_of([MODELS_PRODUCTION, EMBEDDING_GATE, KB_INDEX],
                                            lookback_days=REENRICHMENT_LOOKBACK_DAYS,
                                            may_be_missing=[MODELS_PRODUCTION])),
    )],
    check_specs=ENRICHED_CHECKS,
    # Its checks can be left out of a run's plan (kafka_events_sensor's runs do: they are evaluated and
    # recorded all the same); the asset itself is always selected.
    can_subset=True,
    # Its pod (a GPU under LLM_BACKEND=offline) comes from the executor: llm_assets/execution.py.
    op_tags={"llm_assets/stage": "enrichment"},
    pool="llm",  # LLM work, one step at a time locally: dagster.yaml `concurrency.pools`
    # A range run (a sensor batch over several dates, a backfill) sends all its dates' cases as one LLM batch.
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def enriched_cases(context: dg.AssetExecutionContext, config: EnrichmentConfig, delta: DeltaLakeStorage,
                   llm: LLMResource, milvus: MilvusResource, embedder: EmbedderResource, kafka: KafkaResource,
                   artifacts: ArtifactStore, audit_signer: AuditSigner) -> Iterator:
    """`enriched/cases`: see ENRICHED_DESCRIPTION (the asset's description in the UI)."""
    days = list(context.partition_keys)
    signing_key = audit_signer.signing_key  # resolved when the resource was set up, before any write
    curated_version = delta.version(CURATED_CASES)  # the snapshot this run enriches and its checks judge
    curated_keys = _keys(delta, CURATED_CASES, curated_version, days)
    read_version = delta.version(ENRICHED_CASES)  # after curated's: everything in it was enriched from what we read
    stored = _keys(delta, ENRICHED_CASES, read_version, days, extra=("model_version", "gate_version",
                                                                     "kb_index_version"))
    history = production_record.history(delta)  # the promotions; nothing promoted: the env-derived backend
    state = production_record.state_from_history(history)
    behind = serving.rows_behind(state, stored)  # rows another model version serves now
    gate_now = serving_gate_version(context.instance) if config.use_gate else None
    kb_now = current_kb_index_version(milvus) or "none"
    stale = rows_behind_dependencies(stored, gate_now, kb_now)  # decided without the gate or KB serving now
    todo = curated_keys if config.full_refresh else pipeline.plan_increment(
        curated_keys, stored, sorted(set(behind["event_id"].to_list()) | set(stale["event_id"].to_list())))
    cases = _curated_rows(delta, curated_version, todo)

    batches: list[int] = []
    served, run = None, None
    if cases.height:
        served_by = serving.served_by(state, cases["event_id"].to_list())
        served, enrich = _bind_pipeline(context, config, delta, llm, milvus, embedder, artifacts, batches,
                                        history, set(served_by), kb_now, days)
        run = enrich(cases, served_by)  # every date of the run in one batch per model version
        if run.new_cache_rows:
            delta.merge(RESULT_CACHE, pipeline.rows_frame(run.new_cache_rows, pipeline.CACHE_SCHEMA), ["cache_key"])
    rows = _with_row_hashes(run.rows) if run else []
    known = set(stored["event_id"].to_list())
    behind_ids = set(behind["event_id"].to_list())
    stale_ids = set(stale["event_id"].to_list())
    mode = "full_refresh" if config.full_refresh else "incremental"

    # One MERGE for all the run's dates (they are in its predicate: runs of other dates never conflict),
    # one scan per version judged and one publish: a 30-day backfill pays for each once, not per date.
    rows_by_day = {day: [r for r in rows if r["event_date"] == day] for day in days}
    merged = days if (config.full_refresh and read_version is not None) else [d for d in days if rows_by_day[d]]
    version_written, deleted = None, {}
    if merged:
        # merge_schema: a table from before a new column (source_sha256, row_sha256) gains it on its next write.
        result = delta.merge(ENRICHED_CASES, pipeline.rows_frame(rows, pipeline.ENRICHED_SCHEMA), ["event_id"],
                             partition_column="event_date", partition_value=merged,
                             delete_unmatched=config.full_refresh, merge_schema=True)
        version_written = result["version"]
        if config.full_refresh and result["deleted"]:  # per date: the rows read that the refresh did not write
            deleted = {d: stored.filter((pl.col("event_date") == d) & ~pl.col("event_id").is_in(
                [r["event_id"] for r in rows_by_day[d]])).height for d in merged}
    failpoints.hit(failpoints.AFTER_ENRICHED_WRITE)
    gate_judged = _judge_gate(context, delta, rows, served) if merged and served is not None else None
    checked = {day: version_written if day in merged else read_version for day in days}
    partitions = _partition_snapshots(delta, checked)

    # The outbox: this run's rows and whatever an earlier run of these dates left unaudited or unpublished.
    is_finished = _run_has_ended(context.instance)
    ledger = outbox.read_ledger(delta, days)
    shared = _days_other_runs_may_write(context, days)
    own = {(r["event_id"], r[outbox.ROW_HASH]) for r in rows}
    pending = {day: outbox.pending_keys(partitions[day], ledger.filter(pl.col("event_date") == day), own,
                                        day in shared, is_finished) for day in days}
    judged = _rows_at(delta, checked, {day: {event_id for event_id, _ in keys} | {r["event_id"] for r in rows_by_day[day]}
                                       for day, keys in pending.items()})
    outcomes = []
    for day in days:
        day_rows = rows_by_day[day]
        written_ids = [r["event_id"] for r in day_rows]
        partition, content = partitions[day], judged[day]
        curated_ids = curated_keys.filter(pl.col("event_date") == day)["event_id"]
        new = sum(i not in known for i in written_ids)
        outcomes.append(_DateOutcome(
            day, curated_rows=curated_ids.len(), new=new, changed=len(written_ids) - new, rows=day_rows,
            deleted=deleted.get(day, 0), version_written=version_written if day in merged else None,
            version_checked=checked[day],
            partition_rows=partition.height,
            evaluations=_evaluate(content, partition, curated_ids, config.max_fallback_rate),
            re_enriched=sum(i in behind_ids for i in written_ids),
            caught_up=sum(i in stale_ids and i not in behind_ids for i in written_ids),
            version_mix=serving.version_mix(state, partition, written_ids),
            behind=serving.rows_behind(state, partition).height,
            outbox_rows=[r for r in content.to_dicts() if (r["event_id"], r[outbox.ROW_HASH]) in pending[day]]))

    for o in outcomes:
        if o.blocking_failures():
            context.log.error(f"{o.day}: not auditing or publishing {len(o.outbox_rows)} case(s): blocking checks "
                              f"failed {o.blocking_failures()}; they stay in the outbox for the next run of the date")
    drained = outbox.drain(
        delta=delta, kafka=kafka, artifacts=artifacts, topic=settings.ENRICHED_TOPIC,
        pending_rows={o.day: o.outbox_rows for o in outcomes if o.outbox_rows and not o.blocking_failures()},
        ledger=ledger, run_id=context.run.run_id, mode=mode,
        delta_versions={o.day: o.version_checked for o in outcomes}, signing_key=signing_key.key,
        publish=config.publish, is_finished=is_finished)
    for o in outcomes:
        o.drained = drained.get(o.day)
        if o.drained and o.drained.bundle_path:
            o.bundle_uri = artifacts.uri(o.drained.bundle_path)
            context.log.info(f"audit bundle {o.bundle_uri} ({o.drained.audited} cases) signed with key "
                             f"{signing_key.key_id} from {signing_key.source}")
        for orphan in o.drained.orphans_removed if o.drained else []:
            context.log.warning(f"removed audit bundle {orphan}: its run ended before recording it (its cases "
                                f"are in this run's bundle)")
        o.published = o.drained.published if o.drained else 0
        context.log.info(f"enriched/cases {o.day}: {len(o.rows)} cases written ({o.new} new, {o.changed} changed, "
                         f"{o.deleted} deleted), {o.published} published"
                         + (f" ({o.drained.found_on_topic} already on the topic from an earlier run)"
                            if o.drained and o.drained.found_on_topic else "")
                         + f"; curated/cases v{curated_version} -> enriched/cases "
                         + (f"v{o.version_written}" if o.version_written is not None else "not written"))

    yield dg.MaterializeResult(metadata={
        **_metadata(outcomes, run, served, batches, state, mode, curated_version, read_version,
                    pictures=not is_micro_batch(context.run.tags)),
        **(gate_judged or {})})
    yield from _check_evaluations(context, outcomes, curated_version)


def _production_metadata(state: ProductionState, outcomes: list[_DateOutcome]) -> dict:
    """What production serves (version, previous version, share) and the model versions of each
    date's rows after the write: a rollout's split, and the rows still behind (the next run's work)."""
    mix = [(o.day, *row) for o in outcomes for row in o.version_mix]
    return {
        "production": dg.MetadataValue.json({
            "version": state.version or f"nothing promoted: {serving.ENV_BACKEND}", "previous_version":
            state.previous_version, "rollout_share": state.rollout_share, "promoted_at": state.promoted_at}),
        "rollout_share": state.rollout_share,
        "model_versions": markdown_table(["event_date", "model_version", "serves as", "configured share", "rows",
                                          "share of rows", "written by this run"], mix),
        "re_enriched_for_production": sum(o.re_enriched for o in outcomes),
        "re_enriched_for_gate_or_kb": sum(o.caught_up for o in outcomes),
        "rows_behind_production": sum(o.behind for o in outcomes),
    }


def _judge_gate(context: dg.AssetExecutionContext, delta: DeltaLakeStorage, rows: list[dict],
                served: _Serving) -> dict:
    """Record the batch's shadow audits and judge the serving gate on them (`gate.health`): a label now
    shown under target is shut off from the next micro-batch on, said on the gate's page too."""
    recorded, precision, decided = gate_health.after_batch(
        delta, rows, served.gate_version, served.shut_off, served.gate_labels, target=served.gate_target,
        min_audits=served.min_audits)
    for row in decided.iter_rows(named=True):
        context.log.warning(f"gate {row['gate_version']} stops serving {row['label']}: {row['reason']}")
        context.log_event(gate_health.shutoff_observation(row))
    shut = sorted(set(served.shut_off) | set(decided["label"].to_list()))
    return {
        "gate_audits_recorded": recorded,
        "gate_labels_shut_off": dg.MetadataValue.json(shut),
        **{f"gate_precision/{label}": float(p.precision) for label, p in precision.items() if p.audited},
    }


def _metadata(outcomes: list[_DateOutcome], run: pipeline.EnrichmentRun | None, served: _Serving | None,
              batches: list[int], state: ProductionState, mode: str, curated_version: int | None,
              read_version: int | None, *, pictures: bool = True) -> dict:
    written = sum(len(o.rows) for o in outcomes)
    by_date = pl.DataFrame([{
        "event_date": o.day, "curated_rows": o.curated_rows, "written": len(o.rows), "new": o.new,
        "changed": o.changed, "re_enriched": o.re_enriched, "deleted": o.deleted, "published": o.published,
        "enriched_rows": o.partition_rows, "behind_production": o.behind,
        "enriched_version_written": o.version_written} for o in outcomes],
        schema={"event_date": pl.String, "curated_rows": pl.Int64, "written": pl.Int64, "new": pl.Int64,
                "changed": pl.Int64, "re_enriched": pl.Int64, "deleted": pl.Int64, "published": pl.Int64,
                "enriched_rows": pl.Int64, "behind_production": pl.Int64, "enriched_version_written": pl.Int64})
    bundles = {o.day: o.bundle_uri for o in outcomes if o.bundle_uri}
    written_keys = {(r["event_id"], r.get(outbox.ROW_HASH)) for o in outcomes for r in o.rows}
    metadata = {
        "mode": mode,
        "cases_written": written,
        "audited_cases": sum(o.drained.audited for o in outcomes if o.drained),
        # rows an earlier run of these dates wrote but did not audit or publish (it died, or its checks failed)
        "outbox_caught_up": sum((r["event_id"], r[outbox.ROW_HASH]) not in written_keys
                                for o in outcomes if o.drained for r in o.outbox_rows),
        "outbox_found_on_topic": sum(o.drained.found_on_topic for o in outcomes if o.drained),
        "summary": f"{written} cases enriched" if written else "0 new cases",
        "published_to_cases_enriched": sum(o.published for o in outcomes),
        # absent rather than a placeholder when there was no table to read
        **({"curated_cases_version_read": curated_version} if curated_version is not None else {}),
        **({"enriched_cases_version_read": read_version} if read_version is not None else {}),
        "enriched_cases_versions_written": dg.MetadataValue.json({o.day: o.version_written for o in outcomes}),
        "by_date": frame_table(by_date, limit=by_date.height),
        "llm_batches": len(batches),
        **_production_metadata(state, outcomes),
    }
    if len(bundles) == 1:
        metadata["audit_bundle"] = dg.MetadataValue.path(next(iter(bundles.values())))
    elif bundles:
        metadata["audit_bundles"] = dg.MetadataValue.json(bundles)
    if len(outcomes) == 1:  # a range run's metadata is shared by its partitions: no per-partition count then
        metadata["dagster/row_count"] = outcomes[0].partition_rows
    if run is None or served is None:
        return metadata
    frame = pipeline.rows_frame(run.rows, pipeline.ENRICHED_SCHEMA)
    labels = Counter(r["label"] for r in run.rows)
    versions = served.versions()
    # One version: plain values as before; a rollout run: a value per serving version.
    one = next(iter(versions.values())) if len(versions) == 1 else None

    def per_version(value) -> str | dg.MetadataValue:
        if one is not None:
            return value(next(iter(versions)), one)
        return dg.MetadataValue.json({key or serving.ENV_BACKEND: value(key, v) for key, v in versions.items()})

    transports = {key or serving.ENV_BACKEND: t.stats() for key, t in served.transports.items()}
    return {
        **metadata,
        "backend": per_version(lambda key, _: served.backends[key]),
        "model_version": per_version(lambda _, v: v.model_version),
        "prompt_version": per_version(lambda _, v: v.prompt_version),
        "kb_index_version": next(iter(versions.values())).kb_index_version,
        "gate_version": next(iter(versions.values())).gate_version or "none",
        "routes": markdown_table(["route", "decided now", "served from cache", "cases"], run.route_table()),
        # Numbers Dagster plots over time (the asset's Plots tab), one per route, on every run.
        **{f"routes/{route}": int(run.routes[route]) for route in pipeline.ROUTES},
        # The picture only on runs that are not micro-batches (backfills, catch-up, daily passes).
        **({"plot_routes": dg.MetadataValue.md(plots.markdown_image(plots.stacked_bars(
            [route for route, *_ in run.route_table()],
            {"decided now": [now for _, now, _, _ in run.route_table()],
             "served from cache": [cached for _, _, cached, _ in run.route_table()]},
            f"Routes of the {len(run.rows)} cases of this run", "cases"), "cases by route"))} if pictures else {}),
        "served_from_cache": run.served_from_cache,
        "served_from_cache_share": round(run.served_from_cache_share(), 4),
        "labels": markdown_table(["label", "cases"], sorted(labels.items())),
        "gate_threshold": "per label" if run.gate_threshold is None else run.gate_threshold,
        "gated_share_of_uncached": round(run.gated_share, 4),
        "gate_audits_sent": run.audited,
        "gate_shut_off_cases": run.shut_off,
        # Cases whose text tries to instruct the model: enriched, flagged on the row, never a training example.
        "injection_suspected": sum(bool(r.get("injection_suspected")) for r in run.rows),
        "llm_calls_per_case": round(run.calls_per_case(), 4),
        **run.llm_stats.as_metadata(),
        "llm_errors_by_kind": dg.MetadataValue.md(run.llm_stats.errors_markdown()),
        **({"llm_transport": dg.MetadataValue.json(next(iter(transports.values())) if len(transports) == 1
                                                   else transports)} if transports else {}),
        "fallback_reasons": dg.MetadataValue.json(dict(run.fallback_reasons)),
        "pii_redacted": dg.MetadataValue.json(dict(run.redactions)),
        "cache_rows_added": len(run.new_cache_rows),
        # A preview of rows on the runs a person looks at; a micro-batch's rows are in the table (and the UI's
        # asset page shows the latest non-micro-batch preview).
        **({"preview": frame_table(frame.select("event_id", "event_date", "route", "served_from_cache", "label",
                                                "confidence", "severity", "model_version", "summary"))}
           if pictures else {}),
    }


def _check_evaluations(context: dg.AssetExecutionContext, outcomes: list[_DateOutcome],
                       curated_version: int | None) -> Iterator:
    """One evaluation per check and date (a range run's plain check result would have no partition),
    then the check outputs Dagster expects (downstream steps wait on the blocking ones)."""
    # Every check is evaluated, planned or not: a batch's run does not plan them (kafka_events_sensor's
    # HotPath), and an unplanned evaluation is recorded all the same.
    targets = target_materializations(context, ENRICHED_CASES, [o.day for o in outcomes])
    for o in outcomes:
        judged = {"partition": o.day, **({"enriched_cases_version": o.version_checked}
                                         if o.version_checked is not None else {}),
                  **({"curated_cases_version": curated_version} if curated_version is not None else {})}
        for name, (passed, details) in o.evaluations.items():
            scope = {"judged": "partition"} if name in PARTITION_CHECKS else {
                "judged": "rows written, audited or published by this run",
                "rows_checked": len({r["event_id"] for r in o.rows} | {r["event_id"] for r in o.outbox_rows})}
            warn = name in WARN_CHECKS
            yield partition_check_evaluation(
                context, asset_key=ENRICHED_CASES, check_name=name, partition=o.day, passed=passed,
                metadata={**judged, **scope, **{k: dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v
                                                 for k, v in details.items()}},
                severity=dg.AssetCheckSeverity.WARN if warn else dg.AssetCheckSeverity.ERROR, blocking=not warn,
                targets=targets)
    yield from check_outputs(context)
