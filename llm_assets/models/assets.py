"""Assets of the model lifecycle: `models/evaluation` (one partition per registered model version)
and `models/production` (the promotion record). Thin shells over `evaluation`, `regression` and
`production`; the blocking check `no_regression_vs_production` is in `checks.py`.
"""

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from llm_assets.asset_keys import EVALUATION_GOLDEN_CASES, KB_INDEX, MODELS_EVALUATION, MODELS_PRODUCTION
from llm_assets.domain import current_pack
from llm_assets.llm import pipeline
from llm_assets.gate.assets import materialized_gate
from llm_assets.llm.llm_enricher import LLMEnricher
from llm_assets.lib.redaction import redact_cached
from llm_assets.evaluation.golden_cases import read_golden
from llm_assets.knowledge_base.retrieval import current_kb_index_version, retrieve_by_vectors
from llm_assets.metadata import frame_table, markdown_table
from llm_assets.models import production
from llm_assets.models.evaluation import (
    EVALUATION_KEY,
    PARTITION_COLUMN,
    RecordingLLM,
    case_rows,
    confusion_png,
    run_golden,
    summarize,
)
from llm_assets.models.golden import DEFAULT_GOLDEN_CASES, golden_fingerprint, golden_frame
from llm_assets.models.registry import (
    RegisteredModel,
    RegistryError,
    check_runnable,
    check_unchanged,
    load_registry,
    resolve_endpoint,
    row_model_version,
    row_prompt_version,
)
from llm_assets.lib.plots import markdown_image
from llm_assets.partitions import model_versions
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource

CHECK_NAME = "no_regression_vs_production"
REGRESSION_CHECK = dg.AssetCheckKey(MODELS_EVALUATION, CHECK_NAME)

class ModelEvaluationConfig(dg.Config):
    registry_path: str = Field(default="", description="model registry YAML; empty = llm_assets/models/registry.yaml")
    golden_cases: int = Field(default=DEFAULT_GOLDEN_CASES, description="golden labelled cases to evaluate on "
                                                                        "(the first N of the evaluation split; 0: all)")
    top_k: int = Field(default=4, description="KB chunks retrieved per case (as enriched/cases)")
    use_kb: bool = Field(default=True, description="retrieve KB context from the serving kb/index, as production "
                                                   "does (false: evaluate without context, and never open Milvus)")
    gate_threshold: float | None = Field(default=None, description="one gate threshold for every label of the "
                                       "local version; empty = the gate's calibrated per-label thresholds")


def registered(name: str, registry_path: str = "") -> RegisteredModel:
    """The registry entry of a partition key / version name, or a `dg.Failure` that says why not."""
    try:
        registry = load_registry(registry_path or None)
    except RegistryError as exc:
        raise dg.Failure(str(exc)) from exc
    if name not in registry:
        raise dg.Failure(f"model version {name!r} is not in the registry ({', '.join(sorted(registry))})")
    return registry[name]


def transport_for(model: RegisteredModel, bound: LLMResource) -> LLMResource:
    """An `LLMResource` for a registered LLM version: its backend, endpoint and model id, with the
    environment's transport settings."""
    base_url = resolve_endpoint(model)
    if model.backend == "server" and not base_url:
        raise dg.Failure(f"{model.name}: endpoint {model.endpoint} is not set in the environment")
    return bound.with_endpoint(model.backend, base_url, model.model)


def _no_vectors(texts: list[str]) -> np.ndarray:
    return np.zeros((len(texts), 0), dtype=np.float32)


def evaluated_rows(delta: DeltaLakeStorage, version: str) -> pl.DataFrame:
    """The stored per-case results of one version (empty without a table or partition)."""
    if not delta.exists(MODELS_EVALUATION):
        return pl.DataFrame()
    return delta.read(MODELS_EVALUATION, partition_column=PARTITION_COLUMN, partition_values=[version])


@dg.asset(
    key=MODELS_EVALUATION,
    partitions_def=model_versions,
    # Not on models/embedding_gate, although the local version classifies with its latest version: the
    # gate learns from enriched/cases, which follows models/production, which follows this asset.
    deps=[KB_INDEX, EVALUATION_GOLDEN_CASES],
    kinds={"vllm", "delta"},
    group_name="models",
    pool="llm",  # LLM work: one step at a time locally, like enriched/cases
)
def models_evaluation(context: dg.AssetExecutionContext, config: ModelEvaluationConfig, delta: DeltaLakeStorage,
                      llm: LLMResource, milvus: MilvusResource, embedder: EmbedderResource,
                      artifacts: ArtifactStore) -> dg.MaterializeResult:
    """Golden-set results of one registered model version (the partition key is its registry name).

    Runs the golden labelled cases through the production enrichment path (redaction, KB retrieval
    from the serving `kb/index`, the version's prompts and generation parameters, structured-output
    parsing with one re-ask, the fallback) and replaces the partition's rows in Delta (one row per
    golden case, key `model_version` + `event_id`). An LLM version answers every golden case (the
    embedding gate is not in front of it); the local version is the rules plus the gate's classifier.
    Reports accuracy, macro-F1, per-label precision and recall, valid-JSON and allowed-action rates,
    PII found in outputs, latency p50/p95, tokens and LLM calls per case, and a confusion matrix.
    The blocking check `no_regression_vs_production` compares it with the production version.
    """
    name = context.partition_key
    model = registered(name, config.registry_path)
    try:
        check_runnable(model)
        stored = evaluated_rows(delta, name)
        # Versions are immutable: the same name must still mean the same content, unless the domain
        # pack changed since (its fingerprint is part of the content): then this is the new evaluation.
        if stored.height and _evaluated_pack(context.instance, name) in (None, current_pack().fingerprint):
            check_unchanged(model, stored["registry_fingerprint"][0])
    except RegistryError as exc:
        raise dg.Failure(str(exc)) from exc

    golden = golden_frame(read_golden(delta, "evaluation"), config.golden_cases)
    golden_sha = golden_fingerprint(golden)
    kb_version = (current_kb_index_version(milvus) if config.use_kb else None) or "none"
    gate = None if model.uses_llm else materialized_gate(context.instance, artifacts)
    versions = pipeline.Versions(model_version=row_model_version(model, gate.version if gate else None),
                                 prompt_version=row_prompt_version(model), kb_index_version=kb_version,
                                 gate_version=gate.version if gate else None)

    def retrieve_context(vectors) -> list[list[dict]]:
        if kb_version == "none":
            return [[] for _ in range(len(vectors))]
        hits = retrieve_by_vectors(milvus, vectors, top_k=config.top_k)
        return [[{"doc_id": h.doc_id, "type": h.type, "label": h.label, "content": redact_cached(h.content)}
                 for h in chunk_hits] for chunk_hits in hits]

    recorder = None
    if model.uses_llm:
        recorder = RecordingLLM(LLMEnricher(transport_for(model, llm), call_mode=model.call_mode,
                                            max_tokens=model.max_tokens, temperature=model.temperature))
    # The case vectors serve the KB search and the gate only: without either, none are computed.
    embed = embedder.encode if (kb_version != "none" or gate is not None) else _no_vectors
    result = run_golden(golden, model=model, versions=versions, retrieve=retrieve_context, embed=embed,
                        gate=gate, gate_threshold=config.gate_threshold, llm=recorder)
    rows = case_rows(golden, result, model, golden_sha256=golden_sha, run_id=context.run.run_id)
    written = delta.merge(MODELS_EVALUATION, rows, list(EVALUATION_KEY), partition_column=PARTITION_COLUMN,
                          partition_value=name, delete_unmatched=True)
    summary = summarize(rows, result.wall_s)
    context.log.info(f"{name}: accuracy {summary['accuracy']}, macro-F1 {summary['macro_f1']} on "
                     f"{summary['cases']} golden cases in {result.wall_s:.1f} s")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(f"{model.fingerprint[:16]}:{golden_sha[:16]}:{context.run.run_id[:8]}"),
        metadata=evaluation_metadata(model, summary, rows, versions, golden_sha, written.get("version")))


def evaluation_metadata(model: RegisteredModel, summary: dict, rows: pl.DataFrame, versions: pipeline.Versions,
                        golden_sha: str, delta_version: int | None) -> dict:
    per_label = markdown_table(["label", "precision", "recall", "F1", "support"], [
        (lab, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"])
        for lab, m in summary["per_label"].items()])
    headline = markdown_table(["metric", "value"], [
        (k, summary[k]) for k in ("cases", "accuracy", "macro_f1", "valid_json_rate", "allowed_action_rate",
                                  "pii_outputs", "fallback_rate", "latency_p50_s", "latency_p95_s",
                                  "seconds_per_case", "tokens_per_case", "llm_calls_per_case")])
    wrong = rows.filter(~pl.col("label_correct")).select("event_id", "expected_label", "label", "route", "confidence")
    return {
        **{k: summary[k] for k in ("cases", "accuracy", "macro_f1", "valid_json_rate", "allowed_action_rate",
                                   "pii_outputs", "fallback_rate", "latency_p50_s", "latency_p95_s",
                                   "seconds_per_case", "tokens_per_case", "llm_calls_per_case")},
        "metrics": headline,
        "per_label": per_label,
        "confusion_matrix": dg.MetadataValue.md(markdown_image(
            confusion_png(rows, f"{model.name}: accuracy {summary['accuracy']:.3f}, macro-F1 {summary['macro_f1']:.3f}"),
            f"confusion matrix of {model.name}")),
        "routes": dg.MetadataValue.json(summary["routes"]),
        "wrong_cases": frame_table(wrong, limit=10),
        "backend": model.backend,
        "model": model.model or "(rules + gate)",
        "endpoint": model.endpoint or "",
        "call_mode": model.call_mode,
        "registry_fingerprint": model.fingerprint,
        "domain_pack": current_pack().version,
        "domain_pack_fingerprint": current_pack().fingerprint,
        "enriched_model_version": versions.model_version,
        "prompt_version": versions.prompt_version,
        "kb_index_version": versions.kb_index_version,
        "gate_version": versions.gate_version or "none",
        "golden_sha256": golden_sha,
        **({"models_evaluation_version_written": int(delta_version)} if delta_version is not None else {}),
        "dagster/row_count": rows.height,
    }


class PromotionConfig(dg.Config):
    version: str = Field(description="the registry name to promote; an earlier production version rolls back")
    rollout_share: float = Field(default=1.0, description="share of cases (by a hash of event_id) that get the "
                                                          "version, e.g. 0.05 -> 0.25 -> 1.0; the rest keep the "
                                                          "previous production version")
    note: str = Field(default="", description="why (kept in the history)")
    registry_path: str = Field(default="", description="model registry YAML; empty = llm_assets/models/registry.yaml")


def _evaluated_pack(instance: dg.DagsterInstance, version: str) -> str | None:
    """The domain pack fingerprint the latest evaluation of `version` ran under (None: not recorded)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=MODELS_EVALUATION, asset_partitions=[version]), limit=1).records
    if not records:
        return None
    entry = records[0].asset_materialization.metadata.get("domain_pack_fingerprint")
    return str(entry.value) if entry is not None else None


def latest_check_evaluation(instance: dg.DagsterInstance, version: str):
    """(passed, metadata dict, run_id) of the latest `no_regression_vs_production` evaluation of
    `version`'s partition; None when it was never evaluated."""
    cursor = None
    while True:  # newest first, a page at a time (other versions' evaluations may be newer)
        page = instance.event_log_storage.get_asset_check_execution_history(REGRESSION_CHECK, limit=200,
                                                                           cursor=cursor)
        for record in page:
            evaluation = record.event.asset_check_evaluation if record.event is not None else None
            if record.partition != version or evaluation is None:  # another version, or planned only
                continue
            metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
            return evaluation.passed, metadata, record.run_id
        if len(page) < 200:
            return None
        cursor = page[-1].id


def promotion_refusal(version: str, evaluation, current: production.ProductionState,
                      history: pl.DataFrame) -> str | None:
    """Why `version` may not be promoted now (None: it may). Pure, for the asset and its tests."""
    if evaluation is None:
        return (f"{version} has no {CHECK_NAME} evaluation: materialize models/evaluation[{version}] with its "
                f"check first")
    passed, metadata, _ = evaluation
    if not passed:
        return f"{CHECK_NAME} failed for {version}: {metadata.get('failures', '')}"
    compared = metadata.get("production_version") or None
    was_production = version in set(history["version"].to_list()) if history.height else False
    # A version judged against an older production must be judged again, unless it was production
    # itself (a rollback promotes a version that already served).
    if compared != current.version and not was_production and current.version != version:
        return (f"{version} passed {CHECK_NAME} against {compared or 'no production'}, but production is now "
                f"{current.version}: re-run the check for {version} first")
    return None


@dg.asset(key=MODELS_PRODUCTION, deps=[MODELS_EVALUATION], kinds={"delta"}, group_name="models")
def models_production(context: dg.AssetExecutionContext, config: PromotionConfig,
                      delta: DeltaLakeStorage) -> dg.MaterializeResult:
    """The promoted model version: `enriched/cases` enriches with it (and, during a gradual rollout,
    the configured share of cases by a hash of `event_id`, the rest keeping the previous version).

    Appends one row per promotion to its Delta table (history kept; the latest row wins). It
    materializes only for a version whose latest `no_regression_vs_production` evaluation passed
    (against the current production, or a version that served before): otherwise the run fails and
    production is unchanged. Rollback = promote an earlier version again (`llm-assets models
    rollback`, or materialize this asset with `version` set to the earlier name in the launchpad).
    """
    model = registered(config.version, config.registry_path)
    history = production.history(delta)
    current = production.state_from_history(history)
    evaluation = latest_check_evaluation(context.instance, config.version)
    refusal = promotion_refusal(config.version, evaluation, current, history)
    if refusal is not None:
        raise dg.Failure(f"not promoted: {refusal}. Production stays {current.version or '(none)'}.",
                         metadata={"production_version": current.version or "(none)"})
    stored = evaluated_rows(delta, config.version)
    try:
        check_unchanged(model, stored["registry_fingerprint"][0] if stored.height else None)
    except RegistryError as exc:
        raise dg.Failure(str(exc)) from exc
    try:
        state = production.next_state(current, config.version, config.rollout_share)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    summary = summarize(stored) if stored.height else {}
    was_production = history.height and config.version in set(history["version"].to_list())
    action = "rollback" if was_production and config.version != current.version else "promote"
    _, check_metadata, check_run_id = evaluation
    row = production.promotion_row(context.run.run_id, state, action=action, registry_fingerprint=model.fingerprint,
                                   macro_f1=summary.get("macro_f1"), accuracy=summary.get("accuracy"),
                                   check_run_id=check_run_id, note=config.note)
    delta.merge(MODELS_PRODUCTION, row, list(production.PRODUCTION_KEY_COLUMNS))
    updated = production.history(delta)
    context.log.info(f"{action}: {state.version} at {state.rollout_share:.0%} (previous {state.previous_version})")
    return dg.MaterializeResult(
        # enriched/cases sees a new data version on every change of version or share.
        data_version=dg.DataVersion(f"{state.version}@{state.rollout_share}:{state.previous_version}"),
        metadata={
            "version": state.version, "previous_version": state.previous_version or "(none)",
            "rollout_share": state.rollout_share, "action": action, "promoted_at": state.promoted_at,
            "macro_f1": summary.get("macro_f1", -1.0), "accuracy": summary.get("accuracy", -1.0),
            "check_run_id": check_run_id or "",
            "macro_f1_diff_vs_previous": str(check_metadata.get("macro_f1_diff", "")),
            "registry_fingerprint": model.fingerprint,
            "history": frame_table(updated.sort("promoted_at", descending=True).select(
                "promoted_at", "version", "rollout_share", "previous_version", "action", "macro_f1", "note"),
                limit=20),
            "dagster/row_count": updated.height,
        })

