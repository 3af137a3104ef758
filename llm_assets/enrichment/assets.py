"""Assets of the enrichment domain: the embedding gate model and `enriched/cases`.

`enriched/cases` is a thin shell around `pipeline.enrich_cases`: it binds the pipeline to
the resources, writes the partition, the cache and a signed audit bundle, publishes every
row to `cases.enriched` after the Delta write succeeded, and reports quality checks.
"""

import json
import os
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets import settings
from llm_assets.enrichment import audit, local_rules, pipeline, quality
from llm_assets.enrichment.cache import CACHE_TABLE
from llm_assets.enrichment.gate import (
    DEFAULT_THRESHOLD,
    GateNotFound,
    load_latest_gate,
    save_gate,
    texts_fingerprint,
    train_gate,
    training_examples,
)
from llm_assets.enrichment.redaction import redact_cached
from llm_assets.knowledge_base.retrieval import current_kb_index_version, retrieve_by_vectors
from llm_assets.metadata import frame_table, markdown_table
from llm_assets.partitions import daily_partitions
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.kafka import KafkaResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource

ENRICHED_CASES = dg.AssetKey(["enriched", "cases"])
EMBEDDING_GATE = dg.AssetKey(["models", "embedding_gate"])
KB_DOCUMENTS = dg.AssetKey(["kb", "documents"])
KB_INDEX = dg.AssetKey(["kb", "index"])
CURATED_CASES = dg.AssetKey(["curated", "cases"])
RATINGS = "evaluation/ratings"


def gate_directory() -> Path:
    return settings.llm_assets_home() / "models" / "embedding_gate"


@dg.asset(key=EMBEDDING_GATE, deps=[KB_DOCUMENTS], kinds={"scikit-learn", "sentence-transformers"},
          group_name="models", automation_condition=dg.AutomationCondition.eager())
def embedding_gate(context: dg.AssetExecutionContext, delta: DeltaLakeStorage, embedder: EmbedderResource):
    """The embedding gate: a classifier on sentence embeddings of redacted case texts.

    Trained on the labelled resolved cases of the knowledge base (and on analyst ratings
    in `evaluation/ratings` when they exist). When its confidence for a case reaches the
    threshold, `enriched/cases` skips the LLM for that case (route `gate`). Each training
    is stored under `$LLM_ASSETS_HOME/models/embedding_gate/<version>/` with its metadata.
    """
    chunks = delta.read(KB_DOCUMENTS.to_user_string())
    resolved = chunks.filter(pl.col("type") == "resolved_case").to_dicts() if chunks.height else []
    ratings = delta.read(RATINGS) if delta.exists(RATINGS) else pl.DataFrame()
    extra = [(t, lab) for t, lab in ratings.select("text", "label").iter_rows()] if {"text", "label"} <= set(
        ratings.columns) else []
    examples = training_examples(resolved, extra)
    if not examples.texts:
        raise dg.Failure("kb/documents has no labelled resolved cases to train the embedding gate on")
    texts = [redact_cached(t) for t in examples.texts]
    model = train_gate(embedder.encode(texts), examples.labels, texts_sha256=texts_fingerprint(texts),
                       source_description=f"{len(resolved)} KB resolved cases + {len(extra)} analyst ratings")
    path = save_gate(model, gate_directory())
    cv = model.metadata.get("cross_validation", {})
    return dg.MaterializeResult(metadata={
        "gate_version": model.version,
        "path": dg.MetadataValue.path(str(path)),
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
]


def _check_results(rows: pl.DataFrame, curated_ids: pl.Series, max_fallback_rate: float) -> list[dg.AssetCheckResult]:
    evaluations = {
        "labels_and_confidence_valid": quality.label_and_confidence_valid(rows),
        "actions_within_allow_list": quality.actions_allowed(rows),
        "provenance_versions_present": quality.versions_present(rows),
        "no_pii_in_outputs": quality.no_pii_in_outputs(rows),
        "one_row_per_curated_case": quality.one_row_per_case(rows, curated_ids),
        "fallback_rate_below_threshold": quality.fallback_rate(rows, max_fallback_rate),
    }
    return [
        dg.AssetCheckResult(check_name=name, passed=passed, metadata={k: dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v for k, v in details.items()},
                            severity=dg.AssetCheckSeverity.WARN if name == "fallback_rate_below_threshold" else dg.AssetCheckSeverity.ERROR)
        for name, (passed, details) in evaluations.items()
    ]


def _cached_results(delta: DeltaLakeStorage, keys: list[str]) -> dict[str, dict]:
    """The stored results for `keys` (a filtered scan: the cache grows across partitions)."""
    found = delta.read_where(CACHE_TABLE, "cache_key", keys)
    return {r["cache_key"]: r for r in found.to_dicts()} if found.height else {}


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
    automation_condition=dg.AutomationCondition.eager(),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def enriched_cases(context: dg.AssetExecutionContext, config: EnrichmentConfig, delta: DeltaLakeStorage,
                   llm: LLMResource, milvus: MilvusResource, embedder: EmbedderResource, kafka: KafkaResource):
    """Every curated case with a summary, a label and confidence, severity and allowed next actions.

    Per case, the cheapest route that is good enough: `cache` (same redacted input and the
    same model, prompt and KB index versions), `gate` (the embedding gate is confident: no
    LLM call), `llm` (vLLM with KB context, or the local backend without `LLM_BASE_URL`),
    `fallback` (the LLM failed after retries: rules decide, and the row says why).
    PII is redacted before anything else sees the text. Writes a signed audit bundle and
    publishes every row to `cases.enriched` once the Delta write succeeded.
    """
    day = context.partition_key
    cases = delta.read(CURATED_CASES.to_user_string(), partition_column="event_date", partition_values=[day])
    backend = llm.resolved_backend()
    kb_version = current_kb_index_version(milvus) or "none"
    try:
        gate = load_latest_gate(gate_directory()) if config.use_gate else None
    except GateNotFound:
        context.log.warning("no embedding gate model yet: every case goes to the LLM backend")
        gate = None
    # The local backend's "model" is the rules plus the gate's classifier: a new gate is a new model.
    model_version = (f"{local_rules.LOCAL_RULES_VERSION}+gate:{gate.version if gate else 'none'}"
                     if backend == "local" else llm.model_version())
    versions = pipeline.Versions(
        model_version=model_version,
        prompt_version=local_rules.LOCAL_RULES_VERSION if backend == "local" else llm.prompt_version(),
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
        llm=None if backend == "local" else (lambda ctxs: llm.run_cases(ctxs)),
        cache_lookup=(lambda keys: _cached_results(delta, keys)) if config.use_cache else None,
    )
    rows = pipeline.rows_frame(run.rows, pipeline.ENRICHED_SCHEMA)
    delta.replace_partition(ENRICHED_CASES.to_user_string(), rows, partition_column="event_date", partition_value=day)
    if run.new_cache_rows:
        delta.merge(CACHE_TABLE, pipeline.rows_frame(run.new_cache_rows, pipeline.CACHE_SCHEMA), ["cache_key"])

    check_results = _check_results(rows, cases["event_id"] if cases.height else pl.Series([], dtype=pl.String),
                                   config.max_fallback_rate)
    blocking_failed = [c.check_name for c in check_results
                       if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]

    key = audit.resolve_signing_key(os.environ, settings.llm_assets_home())
    bundle_path = audit.write_bundle(settings.audit_dir(),
                                     audit.build_bundle(day, run.rows, run_id=context.run.run_id), key.key)
    context.log.info(f"audit bundle {bundle_path} signed with the key from {key.source}")

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
            "routes": markdown_table(["route", "cases"], sorted(run.routes.items())),
            "labels": markdown_table(["label", "cases"], sorted(labels.items())),
            "gate_threshold": run.gate_threshold,
            "gated_share_of_uncached": round(run.gated_share, 4),
            "llm_calls_per_case": round(run.calls_per_case(), 4),
            **run.llm_stats.as_metadata(),
            "llm_errors_by_kind": dg.MetadataValue.md(run.llm_stats.errors_markdown()),
            "fallback_reasons": dg.MetadataValue.json(dict(run.fallback_reasons)),
            "pii_redacted": dg.MetadataValue.json(dict(run.redactions)),
            "cache_rows_added": len(run.new_cache_rows),
            "audit_bundle": dg.MetadataValue.path(str(bundle_path)),
            "published_to_cases_enriched": published,
            "preview": frame_table(rows.select("event_id", "route", "label", "confidence", "severity", "summary")),
        },
        check_results=check_results,
    )
