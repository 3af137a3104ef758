"""Assets of the enrichment domain: the embedding gate model and `enriched/cases`.

`enriched/cases` is a thin shell around `pipeline.enrich_cases`: it binds the pipeline to
the resources, writes the partition, the cache and a signed audit bundle, publishes every
row to `cases.enriched` after the Delta write succeeded, and reports quality checks.
"""

import json
import os
from collections import Counter

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
from llm_assets.partitions import daily_partitions
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
    publish: bool = Field(default=True, description="publish every row to cases.enriched")
    call_mode: str = Field(default="combined", description="combined: one LLM call per case; per_skill: three "
                                                           "(summarize, classify, propose actions)")


ENRICHED_CHECKS = [
    dg.AssetCheckSpec("labels_and_confidence_valid", asset=ENRICHED_CASES, blocking=True,
                      description="Every label is one of the five, every confidence in [0, 1]."),
    dg.AssetCheckSpec("actions_within_allow_list", asset=ENRICHED_CASES, blocking=True,
                      description="At most 3 actions, verbs and approval levels from the allow-list."),
    dg.AssetCheckSpec("provenance_versions_present", asset=ENRICHED_CASES, blocking=True,
                      description="model_version, prompt_version and kb_index_version on every row."),
    dg.AssetCheckSpec("no_pii_in_outputs", asset=ENRICHED_CASES, blocking=True,
                      description="No email, card, phone, IBAN or national id in summary or actions."),
    dg.AssetCheckSpec("one_row_per_curated_case", asset=ENRICHED_CASES, blocking=True,
                      additional_deps=[CURATED_CASES],
                      description="Exactly one enriched row per curated case: nothing dropped or duplicated."),
    dg.AssetCheckSpec("fallback_rate_below_threshold", asset=ENRICHED_CASES,
                      description="Share of cases on the fallback route (WARN above the configured rate)."),
    dg.AssetCheckSpec("routes_say_what_decided", asset=ENRICHED_CASES, blocking=True,
                      description="Every route is gate, llm, local or fallback; a fallback says why; gate and "
                                  "local rows made no LLM call; served_from_cache is set."),
]


def _check_results(rows: pl.DataFrame, curated_ids: pl.Series, max_fallback_rate: float) -> list[dg.AssetCheckResult]:
    evaluations = {
        "labels_and_confidence_valid": quality.label_and_confidence_valid(rows),
        "actions_within_allow_list": quality.actions_allowed(rows),
        "provenance_versions_present": quality.versions_present(rows),
        "no_pii_in_outputs": quality.no_pii_in_outputs(rows),
        "one_row_per_curated_case": quality.one_row_per_case(rows, curated_ids),
        "fallback_rate_below_threshold": quality.fallback_rate(rows, max_fallback_rate),
        "routes_say_what_decided": quality.routes_say_what_decided(rows),
    }
    return [
        dg.AssetCheckResult(check_name=name, passed=passed, metadata={k: dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v for k, v in details.items()},
                            severity=dg.AssetCheckSeverity.WARN if name == "fallback_rate_below_threshold" else dg.AssetCheckSeverity.ERROR)
        for name, (passed, details) in evaluations.items()
    ]


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


@dg.asset(
    key=ENRICHED_CASES,
    deps=[CURATED_CASES, KB_INDEX, EMBEDDING_GATE],
    partitions_def=daily_partitions,
    check_specs=ENRICHED_CHECKS,
    kinds={"vllm", "milvus", "delta", "kafka"},
    group_name="enrichment",
    op_tags={"llm_assets/stage": "enrichment", **_gpu_op_tags()},
    pool="llm",  # LLM work, one step at a time locally: dagster.yaml `concurrency.pools`
    automation_condition=build_daily_derived(ignore_updates_of=[KB_INDEX, EMBEDDING_GATE]),  # versions: backfills
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def enriched_cases(context: dg.AssetExecutionContext, config: EnrichmentConfig, delta: DeltaLakeStorage,
                   llm: LLMResource, milvus: MilvusResource, embedder: EmbedderResource, kafka: KafkaResource,
                   artifacts: ArtifactStore, audit_signer: AuditSigner):
    """Every curated case with a summary, a label and confidence, severity and allowed next actions.

    Per case, the cheapest way that is good enough, and `route` says which decided the row:
    `gate` (the embedding gate is confident: no LLM call), `llm` (vLLM answered, with KB
    context), `local` (no `LLM_BASE_URL`: rules and the gate's classifier decide), `fallback`
    (the LLM failed after retries: rules decide, and `fallback_reason` says why). A case whose
    redacted input and model, prompt and KB index versions are unchanged is served from the
    result cache with its original route and `served_from_cache` set, without new work.
    PII is redacted before anything else sees the text. Writes a signed audit bundle and
    publishes every row to `cases.enriched` once the Delta write succeeded.
    """
    day = context.partition_key
    cases = delta.read(CURATED_CASES, partition_column="event_date", partition_values=[day])
    backend = llm_enricher.model_backend(llm)
    kb_version = current_kb_index_version(milvus) or "none"
    gate = _materialized_gate(context, artifacts) if config.use_gate else None
    named = model_versions.versions_for(llm_enricher.describe(
        llm, call_mode=config.call_mode, gate_version=gate.version if gate else None))
    versions = pipeline.Versions(
        model_version=named.model_version,
        prompt_version=named.prompt_version,
        kb_index_version=kb_version,
        gate_version=gate.version if gate else None,
    )

    def retrieve_context(vectors) -> list[list[dict]]:
        hits = retrieve_by_vectors(milvus, vectors, top_k=config.top_k)
        return [[{"doc_id": h.doc_id, "type": h.type, "label": h.label, "content": redact_cached(h.content)}
                 for h in chunk_hits] for chunk_hits in hits]

    run = pipeline.enrich_cases(
        cases, day=day, versions=versions, retrieve=retrieve_context, embed=embedder.encode, gate=gate,
        gate_threshold=config.gate_threshold,
        llm=llm_enricher.LLMEnricher(llm, call_mode=config.call_mode) if llm.configured else None,
        cache_lookup=(lambda keys: _cached_results(delta, keys)) if config.use_cache else None,
    )
    rows = pipeline.rows_frame(run.rows, pipeline.ENRICHED_SCHEMA)
    delta.replace_partition(ENRICHED_CASES, rows, partition_column="event_date", partition_value=day)
    if run.new_cache_rows:
        delta.merge(RESULT_CACHE, pipeline.rows_frame(run.new_cache_rows, pipeline.CACHE_SCHEMA), ["cache_key"])

    check_results = _check_results(rows, cases["event_id"] if cases.height else pl.Series([], dtype=pl.String),
                                   config.max_fallback_rate)
    blocking_failed = [c.check_name for c in check_results
                       if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]

    signing_key = audit_signer.signing_key  # resolved when the resource was set up, before any write
    bundle_uri = artifacts.uri(audit.write_bundle(
        artifacts, audit.build_bundle(day, run.rows, run_id=context.run.run_id), signing_key.key))
    context.log.info(f"audit bundle {bundle_uri} signed with key {signing_key.key_id} from {signing_key.source}")

    published = 0
    if blocking_failed:
        context.log.error(f"not publishing to {settings.ENRICHED_TOPIC}: blocking checks failed {blocking_failed}")
    elif config.publish and run.rows:
        kafka.produce_batch(settings.ENRICHED_TOPIC, [
            (r["event_id"], json.dumps({**r, "enriched_at": r["enriched_at"].isoformat()}).encode()) for r in run.rows])
        published = len(run.rows)

    labels = Counter(r["label"] for r in run.rows)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows.height,
            "backend": backend,
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
            "audit_bundle": dg.MetadataValue.path(bundle_uri),
            "published_to_cases_enriched": published,
            "preview": frame_table(rows.select("event_id", "route", "served_from_cache", "label", "confidence",
                                               "severity", "summary")),
        },
        check_results=check_results,
    )
