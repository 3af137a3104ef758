"""Assets of the enrichment domain: the embedding gate model and `enriched/cases`.

`enriched/cases` is a thin shell around `pipeline.enrich_cases`: it picks the curated cases its
dates do not hold yet (`pipeline.plan_increment`), enriches them in one batch, MERGEs them per
date, writes the cache and a signed audit bundle covering exactly them, publishes exactly them
to `cases.enriched` once the Delta write and its blocking checks passed, and reports the checks
per date.
"""

import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets import settings
from llm_assets.asset_keys import (
    CURATED_CASES,
    EMBEDDING_GATE,
    ENRICHED_CASES,
    EVALUATION_RATINGS,
    KB_DOCUMENTS,
    KB_INDEX,
    RESULT_CACHE,
)
from llm_assets.automation import build_daily_derived
from llm_assets.enrichment import audit, llm_enricher, model_versions, pipeline, quality
from llm_assets.enrichment.gate import (
    DEFAULT_THRESHOLD,
    GateModel,
    GateNotFound,
    load_gate,
    save_gate,
    texts_fingerprint,
    train_gate,
    training_examples,
)
from llm_assets.enrichment.redaction import redact_cached
from llm_assets.knowledge_base.retrieval import current_kb_index_version, retrieve_by_vectors
from llm_assets.metadata import frame_table, markdown_table
from llm_assets.partitions import check_outputs, daily_partitions, partition_check_evaluation
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.kafka import KafkaResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource
from llm_assets.resources.signing import AuditSigner


@dg.asset(key=EMBEDDING_GATE, deps=[KB_DOCUMENTS], kinds={"scikit-learn", "sentence-transformers"},
          group_name="models", automation_condition=dg.AutomationCondition.eager())
def embedding_gate(context: dg.AssetExecutionContext, delta: DeltaLakeStorage, embedder: EmbedderResource,
                   artifacts: ArtifactStore):
    """The embedding gate: a classifier on sentence embeddings of redacted case texts.

    Trained on the labelled resolved cases of the knowledge base (and on analyst ratings
    in `evaluation/ratings` when they exist). When its confidence for a case reaches the
    threshold, `enriched/cases` skips the LLM for that case (route `gate`). Each training
    is stored in the artifact store under `models/embedding_gate/<version>/` with its metadata;
    `enriched/cases` loads the `gate_version` of this asset's latest materialization.
    """
    chunks = delta.read(KB_DOCUMENTS)
    resolved = chunks.filter(pl.col("type") == "resolved_case").to_dicts() if chunks.height else []
    ratings = delta.read(EVALUATION_RATINGS) if delta.exists(EVALUATION_RATINGS) else pl.DataFrame()
    extra = [(t, lab) for t, lab in ratings.select("text", "label").iter_rows()] if {"text", "label"} <= set(
        ratings.columns) else []
    examples = training_examples(resolved, extra)
    if not examples.texts:
        raise dg.Failure("kb/documents has no labelled resolved cases to train the embedding gate on")
    texts = [redact_cached(t) for t in examples.texts]
    model = train_gate(embedder.encode(texts), examples.labels, texts_sha256=texts_fingerprint(texts),
                       source_description=f"{len(resolved)} KB resolved cases + {len(extra)} analyst ratings")
    folder = save_gate(model, artifacts)
    cv = model.metadata.get("cross_validation", {})
    # enriched/cases reads gate_version from this materialization: lineage, not a folder scan.
    return dg.MaterializeResult(data_version=dg.DataVersion(model.version), metadata={
        "gate_version": model.version,
        "artifact_uri": dg.MetadataValue.path(artifacts.uri(folder)),
        "training_examples": len(texts),
        "label_counts": dg.MetadataValue.json(model.metadata["label_counts"]),
        "cross_validation": dg.MetadataValue.json(cv),
    })


class EnrichmentConfig(dg.Config):
    gate_threshold: float = Field(default=DEFAULT_THRESHOLD, description="gate confidence that skips the LLM")
    use_gate: bool = Field(default=True, description="false: every uncached case goes to the LLM")
    use_cache: bool = Field(default=True, description="false: ignore the result cache (still refreshes it)")
    top_k: int = Field(default=4, description="KB chunks retrieved per case")
    max_fallback_rate: float = Field(default=0.05, description="above it the fallback-rate check warns")
    publish: bool = Field(default=True, description="publish the rows this run writes to cases.enriched")
    call_mode: str = Field(default="combined", description="combined: one LLM call per case; per_skill: three "
                                                           "(summarize, classify, propose actions)")
    full_refresh: bool = Field(
        default=False,
        description="Re-enrich every curated case of the run's dates (backfills; model, prompt, KB index or gate "
                    "version changes; changed signal tables) and replace each date, instead of enriching only the "
                    "cases that are new or changed. Cache hits keep their route with served_from_cache; every "
                    "row is published and audited again.")


def _check_spec(name: str, description: str, *, blocking: bool = True, **kwargs) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=ENRICHED_CASES, blocking=blocking, partitions_def=daily_partitions,
                             description=description, **kwargs)


# Content checks judge the rows a run wrote (earlier rows were judged by the runs that wrote them);
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


def _materialized_gate(context: dg.AssetExecutionContext, artifacts: ArtifactStore) -> GateModel | None:
    """The gate version of `models/embedding_gate`'s latest materialization, loaded from the artifact store.

    Lineage, not a folder scan: every run (a fresh pod in production) uses exactly the version
    the instance recorded. None (with a warning) when the gate was never materialized.
    """
    event = context.instance.get_latest_materialization_event(EMBEDDING_GATE)
    recorded = event.asset_materialization.metadata.get("gate_version") if event and event.asset_materialization else None
    if recorded is None:
        context.log.warning("models/embedding_gate has not been materialized yet: every case goes to the LLM backend")
        return None
    try:
        return load_gate(artifacts, str(recorded.value))
    except GateNotFound as exc:
        raise dg.Failure(f"models/embedding_gate recorded gate_version {recorded.value}, but the artifact store "
                         f"does not have it ({exc}); check ARTIFACT_ROOT or rematerialize models/embedding_gate") from exc


def _gpu_op_tags() -> dict:
    """The in-process vLLM backend needs a GPU in the step's pod; the server backend does not."""
    if os.environ.get("LLM_BACKEND") != "offline":
        return {}
    return {"dagster-k8s/config": {"container_config": {"resources": {
        "requests": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "32Gi"},
        "limits": {"nvidia.com/gpu": "1"}}}}}


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
    bundle_uri: str | None = None
    published: int = 0

    def blocking_failures(self) -> list[str]:
        return [name for name, (passed, _) in self.evaluations.items() if not passed and name not in WARN_CHECKS]


def _keys(delta: DeltaLakeStorage, key: dg.AssetKey, version: int | None, days: list[str]) -> pl.DataFrame:
    """(event_date, event_id, source_sha256) of the dates at `version`; a null hash where the table
    has no hash column yet (an enriched table from before: those rows are enriched once more)."""
    schema = {"event_date": pl.String, "event_id": pl.String, pipeline.SOURCE_HASH: pl.String}
    if version is None:
        return pl.DataFrame(schema=schema)
    scan = delta.scan(key, version=version)
    hashed = pipeline.SOURCE_HASH in scan.collect_schema().names()
    hash_column = pl.col(pipeline.SOURCE_HASH) if hashed else pl.lit(None, dtype=pl.String).alias(pipeline.SOURCE_HASH)
    return scan.filter(pl.col("event_date").is_in(days)).select("event_date", "event_id", hash_column).collect()


def _curated_rows(delta: DeltaLakeStorage, version: int | None, todo: pl.DataFrame) -> pl.DataFrame:
    """The full curated rows (at `version`) of the cases to enrich: only those are read."""
    if version is None or todo.is_empty():
        return pl.DataFrame()
    scan = delta.scan(CURATED_CASES, version=version)
    days = todo["event_date"].unique().to_list()
    return (scan.filter(pl.col("event_date").is_in(days) & pl.col("event_id").is_in(todo["event_id"].to_list()))
            .collect().sort("event_date", "event_id"))


def _snapshot(delta: DeltaLakeStorage, version: int | None, day: str, written_ids: list[str]):
    """The date at `version`: (event_id, route) of every row, and the full rows this run wrote."""
    if version is None:
        empty = pl.DataFrame(schema=pipeline.ENRICHED_SCHEMA)
        return empty.select("event_id", "route"), empty
    scan = delta.scan(ENRICHED_CASES, version=version).filter(pl.col("event_date") == day)
    partition = scan.select("event_id", "route").collect()
    written = (scan.filter(pl.col("event_id").is_in(written_ids)).collect() if written_ids
               else pl.DataFrame(schema=pipeline.ENRICHED_SCHEMA))
    return partition, written


def _bind_pipeline(context: dg.AssetExecutionContext, config: EnrichmentConfig, delta: DeltaLakeStorage,
                   llm: LLMResource, milvus: MilvusResource, embedder: EmbedderResource, artifacts: ArtifactStore,
                   batches: list[int]):
    """The run's versions and `enrich(cases)`, bound to the resources (only when there is work:
    an empty increment opens neither Milvus nor the LLM)."""
    kb_version = current_kb_index_version(milvus) or "none"
    gate = _materialized_gate(context, artifacts) if config.use_gate else None
    named = model_versions.versions_for(llm_enricher.describe(
        llm, call_mode=config.call_mode, gate_version=gate.version if gate else None))
    versions = pipeline.Versions(model_version=named.model_version, prompt_version=named.prompt_version,
                                 kb_index_version=kb_version, gate_version=gate.version if gate else None)

    def retrieve_context(vectors) -> list[list[dict]]:
        hits = retrieve_by_vectors(milvus, vectors, top_k=config.top_k)
        return [[{"doc_id": h.doc_id, "type": h.type, "label": h.label, "content": redact_cached(h.content)}
                 for h in chunk_hits] for chunk_hits in hits]

    enricher = llm_enricher.LLMEnricher(llm, call_mode=config.call_mode) if llm.configured else None

    def send_to_llm(cases):
        batches.append(len(cases))  # one batch per run, whatever the number of dates
        return enricher(cases)

    def enrich(cases: pl.DataFrame) -> pipeline.EnrichmentRun:
        return pipeline.enrich_cases(
            cases, versions=versions, retrieve=retrieve_context, embed=embedder.encode, gate=gate,
            gate_threshold=config.gate_threshold, llm=send_to_llm if enricher else None,
            cache_lookup=(lambda keys: _cached_results(delta, keys)) if config.use_cache else None)

    return versions, enrich


@dg.asset(
    key=ENRICHED_CASES,
    deps=[CURATED_CASES, KB_INDEX, EMBEDDING_GATE],
    partitions_def=daily_partitions,
    check_specs=ENRICHED_CHECKS,
    kinds={"vllm", "milvus", "delta", "kafka"},
    group_name="enrichment",
    op_tags={"llm_assets/stage": "enrichment", **_gpu_op_tags()},
    pool="llm",  # LLM work, one step at a time locally: dagster.yaml `concurrency.pools`
    automation_condition=build_daily_derived(ignore_updates_of=[KB_INDEX, EMBEDDING_GATE]),  # versions: full_refresh
    # A range run (a sensor batch over several dates, a backfill) sends all its dates' cases as one LLM batch.
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def enriched_cases(context: dg.AssetExecutionContext, config: EnrichmentConfig, delta: DeltaLakeStorage,
                   llm: LLMResource, milvus: MilvusResource, embedder: EmbedderResource, kafka: KafkaResource,
                   artifacts: ArtifactStore, audit_signer: AuditSigner) -> Iterator:
    """Curated cases with a summary, a label and confidence, severity and allowed next actions.

    Incremental: a run enriches only the curated cases of its dates that `enriched/cases` does not
    hold as they are (anti-join on `event_id` + the curated row's `source_sha256`, kept on each
    enriched row), MERGEs them on `event_id` (one MERGE per date), writes a signed audit bundle
    covering exactly them and publishes exactly them to `cases.enriched`, after the write and its
    blocking checks passed. Rows already written are never rewritten: their route, `enriched_at`
    and provenance stay. A run with nothing new calls no LLM, publishes nothing and writes no
    bundle. `full_refresh` re-enriches and replaces every case of the dates (backfills, version
    changes, changed signal tables), publishing and auditing them again. A run may cover a date
    range: all its dates' cases go to the LLM as one batch.

    Per case, the cheapest way that is good enough, and `route` says which decided the row:
    `gate` (the embedding gate is confident: no LLM call), `llm` (vLLM answered, with KB
    context), `local` (no `LLM_BASE_URL`: rules and the gate's classifier decide), `fallback`
    (the LLM failed after retries: rules decide, and `fallback_reason` says why). A case whose
    redacted input and model, prompt and KB index versions are unchanged is served from the
    result cache with its original route and `served_from_cache` set, without new work.
    PII is redacted before anything else sees the text. The checks are evaluated here per date,
    on the `enriched/cases` version written and the `curated/cases` version read.
    """
    days = list(context.partition_keys)
    signing_key = audit_signer.signing_key  # resolved when the resource was set up, before any write
    curated_version = delta.version(CURATED_CASES)  # the snapshot this run enriches and its checks judge
    curated_keys = _keys(delta, CURATED_CASES, curated_version, days)
    read_version = delta.version(ENRICHED_CASES)  # after curated's: everything in it was enriched from what we read
    stored = _keys(delta, ENRICHED_CASES, read_version, days)
    todo = curated_keys if config.full_refresh else pipeline.plan_increment(curated_keys, stored)
    cases = _curated_rows(delta, curated_version, todo)

    batches: list[int] = []
    versions, run = None, None
    if cases.height:
        versions, enrich = _bind_pipeline(context, config, delta, llm, milvus, embedder, artifacts, batches)
        run = enrich(cases)  # every date of the run in one batch
        if run.new_cache_rows:
            delta.merge(RESULT_CACHE, pipeline.rows_frame(run.new_cache_rows, pipeline.CACHE_SCHEMA), ["cache_key"])
    rows = run.rows if run else []
    known = set(stored["event_id"].to_list())
    mode = "full_refresh" if config.full_refresh else "incremental"

    outcomes = []
    for day in days:
        day_rows = [r for r in rows if r["event_date"] == day]
        version_written, deleted = None, 0
        if day_rows or (config.full_refresh and read_version is not None):
            # merge_schema: a table from before a new column (source_sha256) gains it on its next write.
            result = delta.merge(ENRICHED_CASES, pipeline.rows_frame(day_rows, pipeline.ENRICHED_SCHEMA), ["event_id"],
                                 partition_column="event_date", partition_value=day,
                                 delete_unmatched=config.full_refresh, merge_schema=True)
            version_written, deleted = result["version"], int(result["deleted"] or 0)
        version = read_version if version_written is None else version_written
        written_ids = [r["event_id"] for r in day_rows]
        partition, written = _snapshot(delta, version, day, written_ids)
        curated_ids = curated_keys.filter(pl.col("event_date") == day)["event_id"]
        new = sum(i not in known for i in written_ids)
        outcomes.append(_DateOutcome(
            day, curated_rows=curated_ids.len(), new=new, changed=len(written_ids) - new, rows=day_rows,
            deleted=deleted, version_written=version_written, version_checked=version,
            partition_rows=partition.height,
            evaluations=_evaluate(written, partition, curated_ids, config.max_fallback_rate)))

    for o in outcomes:
        if o.rows:
            o.bundle_uri = artifacts.uri(audit.write_bundle(artifacts, audit.build_bundle(
                o.day, o.rows, run_id=context.run.run_id, delta_version=o.version_written, mode=mode),
                signing_key.key))
            context.log.info(f"audit bundle {o.bundle_uri} ({len(o.rows)} cases) signed with key "
                             f"{signing_key.key_id} from {signing_key.source}")
        if o.blocking_failures():
            context.log.error(f"{o.day}: not publishing to {settings.ENRICHED_TOPIC}: blocking checks failed "
                              f"{o.blocking_failures()}")
        elif config.publish and o.rows:
            kafka.produce_batch(settings.ENRICHED_TOPIC, [
                (r["event_id"], json.dumps({**r, "enriched_at": r["enriched_at"].isoformat()}).encode())
                for r in o.rows])
            o.published = len(o.rows)
        context.log.info(f"enriched/cases {o.day}: {len(o.rows)} cases written ({o.new} new, {o.changed} changed, "
                         f"{o.deleted} deleted), {o.published} published; curated/cases v{curated_version} -> "
                         f"enriched/cases " + (f"v{o.version_written}" if o.version_written is not None
                                               else "not written"))

    yield dg.MaterializeResult(metadata=_metadata(outcomes, run, versions, batches, llm, mode, curated_version,
                                                  read_version))
    yield from _check_evaluations(context, outcomes, curated_version)


def _metadata(outcomes: list[_DateOutcome], run: pipeline.EnrichmentRun | None, versions: pipeline.Versions | None,
              batches: list[int], llm: LLMResource, mode: str, curated_version: int | None,
              read_version: int | None) -> dict:
    written = sum(len(o.rows) for o in outcomes)
    by_date = pl.DataFrame([{
        "event_date": o.day, "curated_rows": o.curated_rows, "written": len(o.rows), "new": o.new,
        "changed": o.changed, "deleted": o.deleted, "published": o.published, "enriched_rows": o.partition_rows,
        "enriched_version_written": o.version_written} for o in outcomes],
        schema={"event_date": pl.String, "curated_rows": pl.Int64, "written": pl.Int64, "new": pl.Int64,
                "changed": pl.Int64, "deleted": pl.Int64, "published": pl.Int64, "enriched_rows": pl.Int64,
                "enriched_version_written": pl.Int64})
    bundles = {o.day: o.bundle_uri for o in outcomes if o.bundle_uri}
    metadata = {
        "mode": mode,
        "cases_written": written,
        "summary": f"{written} cases enriched" if written else "0 new cases",
        "published_to_cases_enriched": sum(o.published for o in outcomes),
        "curated_cases_version_read": -1 if curated_version is None else curated_version,
        "enriched_cases_version_read": -1 if read_version is None else read_version,
        "enriched_cases_versions_written": dg.MetadataValue.json({o.day: o.version_written for o in outcomes}),
        "by_date": frame_table(by_date, limit=by_date.height),
        "llm_batches": len(batches),
    }
    if len(bundles) == 1:
        metadata["audit_bundle"] = dg.MetadataValue.path(next(iter(bundles.values())))
    elif bundles:
        metadata["audit_bundles"] = dg.MetadataValue.json(bundles)
    if len(outcomes) == 1:  # a range run's metadata is shared by its partitions: no per-partition count then
        metadata["dagster/row_count"] = outcomes[0].partition_rows
    if run is None or versions is None:
        return metadata
    frame = pipeline.rows_frame(run.rows, pipeline.ENRICHED_SCHEMA)
    labels = Counter(r["label"] for r in run.rows)
    return {
        **metadata,
        "backend": llm_enricher.model_backend(llm),
        "model_version": versions.model_version,
        "prompt_version": versions.prompt_version,
        "kb_index_version": versions.kb_index_version,
        "gate_version": versions.gate_version or "none",
        "routes": markdown_table(["route", "decided now", "served from cache", "cases"], run.route_table()),
        "served_from_cache": run.served_from_cache,
        "served_from_cache_share": round(run.served_from_cache_share(), 4),
        "labels": markdown_table(["label", "cases"], sorted(labels.items())),
        "gate_threshold": run.gate_threshold,
        "gated_share_of_uncached": round(run.gated_share, 4),
        "llm_calls_per_case": round(run.calls_per_case(), 4),
        **run.llm_stats.as_metadata(),
        "llm_errors_by_kind": dg.MetadataValue.md(run.llm_stats.errors_markdown()),
        **({"llm_transport": dg.MetadataValue.json(llm.stats())} if llm.configured else {}),
        "fallback_reasons": dg.MetadataValue.json(dict(run.fallback_reasons)),
        "pii_redacted": dg.MetadataValue.json(dict(run.redactions)),
        "cache_rows_added": len(run.new_cache_rows),
        "preview": frame_table(frame.select("event_id", "event_date", "route", "served_from_cache", "label",
                                            "confidence", "severity", "summary")),
    }


def _check_evaluations(context: dg.AssetExecutionContext, outcomes: list[_DateOutcome],
                       curated_version: int | None) -> Iterator:
    """One evaluation per check and date (a range run's plain check result would have no partition),
    then the check outputs Dagster expects (downstream steps wait on the blocking ones)."""
    selected = {key.name for key in context.selected_asset_check_keys}
    for o in outcomes:
        judged = {"partition": o.day, "enriched_cases_version": -1 if o.version_checked is None else o.version_checked,
                  "curated_cases_version": -1 if curated_version is None else curated_version}
        for name, (passed, details) in o.evaluations.items():
            if name not in selected:
                continue
            scope = {"judged": "partition"} if name in PARTITION_CHECKS else {"judged": "rows written by this run",
                                                                             "rows_checked": len(o.rows)}
            warn = name in WARN_CHECKS
            yield partition_check_evaluation(
                context, asset_key=ENRICHED_CASES, check_name=name, partition=o.day, passed=passed,
                metadata={**judged, **scope, **{k: dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v
                                                 for k, v in details.items()}},
                severity=dg.AssetCheckSeverity.WARN if warn else dg.AssetCheckSeverity.ERROR, blocking=not warn)
    yield from check_outputs(context)
