"""The `models/embedding_gate` asset, and the gate version `enriched/cases` and the model
evaluation load (lineage: the `gate_version` of its latest materialization, not a folder scan).

Training is in `model`, the golden-split report in `evaluation`, the distilled examples and the
held-out guard in `distillation`.
"""

import dagster as dg
import polars as pl

from llm_assets.asset_keys import (
    EMBEDDING_GATE,
    EVALUATION_GOLDEN_CASES,
    EVALUATION_RATINGS,
    GATE_TRAINING_EXAMPLES,
    KB_DOCUMENTS,
)
from llm_assets.domain import current_pack
from llm_assets.evaluation.golden_cases import golden_ids
from llm_assets.gate import distillation
from llm_assets.gate import evaluation as gate_evaluation
from llm_assets.gate.model import (
    GateModel,
    GateNotFound,
    load_gate,
    save_gate,
    texts_fingerprint,
    train_gate,
    training_examples,
)
from llm_assets.gate.retraining import training_rows
from llm_assets.lib.redaction import redact_cached
from llm_assets.metadata import markdown_table
from llm_assets.evaluation.analysts import AnalystRegistry
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource


@dg.asset(key=EMBEDDING_GATE, deps=[KB_DOCUMENTS, GATE_TRAINING_EXAMPLES, EVALUATION_GOLDEN_CASES],
          kinds={"scikit-learn", "sentence-transformers"}, group_name="models",
          # New distilled examples retrain the gate through `gate_retraining_sensor` (once enough arrived);
          # new golden cases (ratings) are what the next training leaves out and is judged on, not a reason to train.
          automation_condition=dg.AutomationCondition.eager().ignore(
              dg.AssetSelection.assets(GATE_TRAINING_EXAMPLES, EVALUATION_GOLDEN_CASES)))
def embedding_gate(context: dg.AssetExecutionContext, delta: DeltaLakeStorage, embedder: EmbedderResource,
                   artifacts: ArtifactStore):
    """The embedding gate: a classifier on sentence embeddings of redacted case texts.

    Trained on the labelled resolved cases of the knowledge base (and on analyst ratings
    in `evaluation/ratings` when they exist). When its confidence for a case reaches the
    threshold, `enriched/cases` skips the LLM for that case (route `gate`). Each training
    is stored in the artifact store under `models/embedding_gate/<version>/` with its metadata;
    `enriched/cases` loads the `gate_version` of this asset's latest materialization.

    Distillation: the LLM-taught examples of `models/gate_training_examples` join the training
    set. A retrained candidate replaces the serving gate only if its gated accuracy on the
    held-out golden split is not lower than the best gate's so far (every stored gate, scored on
    the same held-out cases); otherwise this materialization keeps the serving `gate_version` and
    says why (`held_out_verdict`, `held_out_best_so_far`).
    """
    chunks = delta.read(KB_DOCUMENTS)
    resolved = chunks.filter(pl.col("type") == "resolved_case").to_dicts() if chunks.height else []
    ratings = delta.read(EVALUATION_RATINGS) if delta.exists(EVALUATION_RATINGS) else pl.DataFrame()
    distilled, distilled_version = distillation.read_training_examples(delta)
    # Nothing trains on a golden case: it is what this gate and every model version are judged on.
    golden = list(golden_ids(delta))
    if ratings.height:
        ratings = ratings.filter(~pl.col("event_id").is_in(golden))
    if distilled.height:
        distilled = distilled.filter(~pl.col("event_id").is_in(golden))
    resolved, extra, sources = training_rows(resolved, ratings, distilled, AnalystRegistry(artifacts).released())
    examples = training_examples(resolved, extra)
    if not examples.texts:
        raise dg.Failure("kb/documents has no labelled resolved cases to train the embedding gate on")
    texts = [redact_cached(t) for t in examples.texts]
    calibration = gate_evaluation.labelled_set("calibration", delta)
    calibration_texts = [redact_cached(t) for t in calibration.texts]
    model = train_gate(embedder.encode(texts), examples.labels, texts_sha256=texts_fingerprint(texts),
                       source_description=" + ".join(f"{n} {k.replace('_', ' ')}" for k, n in sources.items()),
                       calibration_embeddings=embedder.encode(calibration_texts),
                       calibration_labels=calibration.labels,
                       calibration_sha256=texts_fingerprint(calibration_texts),
                       domain_pack=current_pack().fingerprint)
    verdict, serving, best_version = distillation.held_out_verdict(context, embedder, artifacts, model, delta)
    guard = distillation.verdict_metadata(verdict, distilled_version, sources, best_version)
    if not verdict.accepted:  # the serving version stays: enriched/cases reads gate_version from here
        context.log.warning(f"candidate gate {model.version} rejected: {verdict.reason}")
        kept = serving.version if serving is not None else best_version  # the serving one is gone: the best
        return dg.MaterializeResult(data_version=dg.DataVersion(kept), metadata={
            "gate_version": kept, "candidate_gate_version": model.version, **guard})
    folder = save_gate(model, artifacts)
    cv = model.metadata.get("cross_validation", {})
    golden = gate_evaluation.golden_report(
        model, [gate_evaluation.labelled_set(name, delta) for name in gate_evaluation.SPLITS],
        lambda batch: embedder.encode([redact_cached(t) for t in batch]))
    # enriched/cases reads gate_version from this materialization: lineage, not a folder scan.
    return dg.MaterializeResult(data_version=dg.DataVersion(model.version), metadata={
        "gate_version": model.version,
        "artifact_uri": dg.MetadataValue.path(artifacts.uri(folder)),
        "training_examples": len(texts),
        "label_counts": dg.MetadataValue.json(model.metadata["label_counts"]),
        "cross_validation": dg.MetadataValue.json(cv),
        "target_precision": model.metadata["target_precision"],
        "thresholds": dg.MetadataValue.json(model.metadata["thresholds"]),
        "calibration": dg.MetadataValue.json(model.metadata["calibration"]),
        "golden_splits": markdown_table(gate_evaluation.REPORT_HEADER, gate_evaluation.report_rows(model, golden)),
        **{f"{split}_{k}": float(v) for split, m in golden.items()
           for k, v in m.items() if k in ("gated_share", "gated_accuracy", "accuracy", "ece") and v is not None},
        **({"calibration_ece": float(model.metadata["calibration"]["ece"])}
           if model.metadata["calibration"]["ece"] is not None else {}),
        **guard,
    })


def materialized_gate(instance: dg.DagsterInstance, artifacts: ArtifactStore) -> GateModel | None:
    """The gate of `models/embedding_gate`'s latest materialization, loaded from the artifact store.

    Lineage, not a folder scan: every run (a fresh pod in production) uses exactly the version
    the instance recorded. None when the gate was never materialized.
    """
    recorded = serving_gate_version(instance)
    if recorded is None:
        return None
    try:
        return load_gate(artifacts, recorded)
    except GateNotFound as exc:
        raise dg.Failure(f"models/embedding_gate recorded gate_version {recorded}, but the artifact store "
                         f"does not have it ({exc}); check ARTIFACT_ROOT or rematerialize models/embedding_gate") from exc


def gate_for_run(context: dg.AssetExecutionContext, artifacts: ArtifactStore) -> GateModel | None:
    gate = materialized_gate(context.instance, artifacts)
    if gate is None:
        context.log.warning("models/embedding_gate has not been materialized yet: no case is gated (the LLM, or "
                            "the local strategy without one, decides every case); these rows carry no gate_version "
                            "and are enriched again once a gate serves")
    return gate


def serving_gate_version(instance: dg.DagsterInstance) -> str | None:
    """The `gate_version` recorded by `models/embedding_gate`'s latest materialization (None: none yet)."""
    event = instance.get_latest_materialization_event(EMBEDDING_GATE)
    recorded = event.asset_materialization.metadata.get("gate_version") if event and event.asset_materialization else None
    return None if recorded is None else str(recorded.value)
