"""Distillation: `models/gate_training_examples` and the sensor that retrains the gate from it.

The LLM teaches the gate. Hourly, the confident, schema-valid LLM answers of `enriched/cases`
that no analyst contradicted (a corrected label wins) become versioned training examples with
their provenance and only their redacted text (`examples.py`). When enough examples arrived
that the serving gate has not seen, `gate_retraining_sensor` materializes `models/embedding_gate`,
which trains a candidate on KB resolved cases + ratings + these examples and replaces the
serving gate only if it keeps its gated accuracy on the held-out golden split (`retraining.py`).
"""

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets import settings
from llm_assets.asset_keys import CURATED_CASES, EMBEDDING_GATE, ENRICHED_CASES, EVALUATION_RATINGS, GATE_TRAINING_EXAMPLES
from llm_assets.gate import examples as ex
from llm_assets.gate.retraining import DEFAULT_MIN_NEW_EXAMPLES, best_of, gated_score, judge
from llm_assets.gate.model import GateIntegrityError, GateNotFound, load_gate, stored_gate_versions
from llm_assets.gate.evaluation import labelled_set
from llm_assets.lib.redaction import find_pii, redact_cached
from llm_assets.evaluation.golden_cases import golden_ids
from llm_assets.evaluation.analysts import AnalystRegistry
from llm_assets.metadata import frame_table, markdown_table
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage

DISTILLATION_CRON = "0 * * * *"
# What the gate's materialization records about the examples it considered (read back here and by the sensor).
GATE_EXAMPLES_VERSION_KEY = "gate_training_examples_delta_version"
NEW_EXAMPLES_KEY = "new_examples_since_gate"

_ENRICHED_COLUMNS = ("event_id", "event_date", "label", "confidence", "severity", "actions", "route",
                     "fallback_reason", "model_version", "prompt_version", "gate_version", "enriched_at",
                     "gate_label", "gate_confidence", "injection_suspected")


class DistillationConfig(dg.Config):
    min_confidence: float = Field(default=ex.DEFAULT_MIN_CONFIDENCE,
                                  description="LLM confidence an answer needs to become a training example")


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(key, limit=1).records
    return records[0] if records else None


def _recorded(instance: dg.DagsterInstance, key: dg.AssetKey, name: str):
    """A metadata value of `key`'s latest materialization (None without one)."""
    record = latest_materialization(instance, key)
    entry = record.asset_materialization.metadata.get(name) if record and record.asset_materialization else None
    return None if entry is None else entry.value


def _llm_rows(delta: DeltaLakeStorage) -> pl.DataFrame:
    if not delta.exists(ENRICHED_CASES):
        return pl.DataFrame()
    scan = delta.scan(ENRICHED_CASES)
    present = [c for c in _ENRICHED_COLUMNS if c in scan.collect_schema().names()]
    return scan.filter(pl.col("route") == "llm").select(present).collect()


def _case_texts(delta: DeltaLakeStorage, event_ids: list[str]) -> dict[str, str]:
    """The clear `payload_raw` of the cases (redacted by the selection before anything keeps it)."""
    if not event_ids or not delta.exists(CURATED_CASES):
        return {}
    found = (delta.scan(CURATED_CASES).filter(pl.col("event_id").is_in(event_ids))
             .select("event_id", "payload_raw").collect())
    return dict(found.iter_rows())


@dg.asset(
    key=GATE_TRAINING_EXAMPLES,
    # It reads enriched/cases, curated/cases and evaluation/ratings, which all stand downstream of
    # models/embedding_gate: the teaching loop is a cycle the asset graph cannot hold, so only the
    # edge into the gate is declared (as the gate reads the ratings without declaring them).
    kinds={"delta", "polars"},
    group_name="models",
    check_specs=[
        dg.AssetCheckSpec("no_clear_pii_in_examples", asset=GATE_TRAINING_EXAMPLES, blocking=True,
                          description="The redactor finds nothing in any stored example text."),
        dg.AssetCheckSpec("provenance_on_every_example", asset=GATE_TRAINING_EXAMPLES, blocking=True,
                          description="Every example names the event and the model version that labelled it."),
    ],
    automation_condition=dg.AutomationCondition.cron_tick_passed(DISTILLATION_CRON)
    & ~dg.AutomationCondition.in_progress(),
)
def gate_training_examples(context: dg.AssetExecutionContext, config: DistillationConfig, delta: DeltaLakeStorage,
                           artifacts: ArtifactStore):
    """LLM-taught training examples for the next embedding gate (distillation).

    Cases an LLM decided (route `llm`) with a valid answer and a confidence of at least
    `min_confidence`, unless an analyst said the label is wrong: a rating's corrected label
    replaces the LLM's (`label_source` = `analyst`). One row per distinct redacted case text,
    with provenance: `event_id`, `event_date`, `model_version` and `prompt_version` that
    labelled it, the `gate_version` that sent it to the LLM, the analyst and rating time when
    rated. Only the redacted text is stored (redacted here from `curated/cases`, as enrichment
    redacts it). Rewritten whole on each run (Delta keeps every version; the gate records which
    version it trained on); `distilled_at` says when an example first arrived with its label.
    Metadata `new_examples_since_gate` counts examples the serving gate has not considered:
    `gate_retraining_sensor` retrains the gate when it is large enough.
    """
    enriched = _llm_rows(delta)
    golden = list(golden_ids(delta))  # nothing trains on a golden case
    if enriched.height and golden:
        enriched = enriched.filter(~pl.col("event_id").is_in(golden))
    texts = _case_texts(delta, enriched["event_id"].to_list() if enriched.height else [])
    ratings = delta.read(EVALUATION_RATINGS) if delta.exists(EVALUATION_RATINGS) else pl.DataFrame()
    previous_version = delta.version(GATE_TRAINING_EXAMPLES)
    previous = delta.read(GATE_TRAINING_EXAMPLES) if previous_version is not None else None
    selection = ex.select_examples(enriched, texts, ratings, min_confidence=config.min_confidence,
                                   released=AnalystRegistry(artifacts).released())
    frame = ex.keep_first_distilled_at(selection.examples, previous)
    delta.overwrite(GATE_TRAINING_EXAMPLES, frame)
    version_written = delta.version(GATE_TRAINING_EXAMPLES)

    used_version = _recorded(context.instance, EMBEDDING_GATE, GATE_EXAMPLES_VERSION_KEY)
    used_version = None if used_version is None or int(used_version) < 0 else int(used_version)  # < 0: older runs
    used = delta.read(GATE_TRAINING_EXAMPLES, version=used_version) if used_version is not None else None
    new = ex.new_examples(frame, used)

    pii_rows = [e for e, t in frame.select("event_id", "text").iter_rows() if find_pii(t)]
    missing = frame.filter(pl.col("event_id").is_null() | pl.col("model_version").is_null()).height
    labels = frame.group_by("label").len().sort("label").rows() if frame.height else []
    models = frame.group_by("model_version").len().sort("model_version").rows() if frame.height else []
    context.log.info(f"{frame.height} training examples ({new} new since the serving gate) from "
                     f"{selection.candidates} LLM-decided cases; turned away: {dict(selection.rejected)}")
    version = ex.examples_version(frame)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "examples": frame.height,
            "examples_version": version,
            "delta_version": version_written,
            NEW_EXAMPLES_KEY: new,
            **({"serving_gate_trained_on_delta_version": used_version} if used_version is not None else {}),
            "llm_decided_cases": selection.candidates,
            "turned_away": dg.MetadataValue.json(dict(selection.rejected)),
            "labels_corrected_by_analysts": selection.overridden,
            "confirmed_by_analysts": selection.confirmed,
            "cases_in_review": len(selection.in_review),
            "injections_suspected": len(selection.injections),
            "quarantined_analysts": dg.MetadataValue.json(selection.quarantined),
            "labels": markdown_table(["label", "examples"], labels),
            "labelled_by_model_version": markdown_table(["model_version", "examples"], models),
            "min_confidence": config.min_confidence,
            "dagster/row_count": frame.height,
            "preview": frame_table(frame.select("event_id", "label", "label_source", "llm_confidence",
                                                "model_version", "text")),
        },
        check_results=[
            dg.AssetCheckResult(check_name="no_clear_pii_in_examples", passed=not pii_rows,
                                metadata={"rows_with_pii": len(pii_rows), "event_ids": dg.MetadataValue.json(pii_rows[:5])}),
            dg.AssetCheckResult(check_name="provenance_on_every_example", passed=missing == 0,
                                metadata={"rows_without_provenance": missing}),
        ],
    )


def retraining_decision(examples_event: dg.EventLogRecord | None, gate_event: dg.EventLogRecord | None,
                        min_new_examples: int) -> dg.RunRequest | dg.SkipReason:
    """Retrain when the latest examples materialization is newer than the gate's and brought enough new ones."""
    if examples_event is None:
        return dg.SkipReason("models/gate_training_examples has not been materialized yet")
    if gate_event is not None and gate_event.storage_id > examples_event.storage_id:
        return dg.SkipReason("models/embedding_gate already considered the latest training examples")
    entry = examples_event.asset_materialization.metadata.get(NEW_EXAMPLES_KEY)
    new = int(entry.value) if entry is not None else 0
    if new < min_new_examples:
        return dg.SkipReason(f"{new} new training examples since the serving gate; retraining needs {min_new_examples}")
    return dg.RunRequest(run_key=f"gate_training_examples@{examples_event.storage_id}",
                         asset_selection=[EMBEDDING_GATE],
                         tags={"llm_assets/trigger": "distillation", "llm_assets/new_examples": str(new)})


def build_gate_retraining_sensor(min_new_examples: int = DEFAULT_MIN_NEW_EXAMPLES,
                                 name: str = "gate_retraining_sensor") -> dg.SensorDefinition:
    """The sensor that retrains `models/embedding_gate` once `min_new_examples` LLM-taught examples arrived."""

    @dg.sensor(name=name, target=dg.AssetSelection.assets(EMBEDDING_GATE), minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Materializes models/embedding_gate when models/gate_training_examples brought at least "
                           f"{min_new_examples} examples the serving gate has not considered.")
    def gate_retraining_sensor(context: dg.SensorEvaluationContext):
        return retraining_decision(latest_materialization(context.instance, GATE_TRAINING_EXAMPLES),
                                   latest_materialization(context.instance, EMBEDDING_GATE), min_new_examples)

    return gate_retraining_sensor


gate_retraining_sensor = build_gate_retraining_sensor()


# -- used by `models/embedding_gate` (enrichment/assets.py) -------------------------------------------

def read_training_examples(delta: DeltaLakeStorage) -> tuple[pl.DataFrame, int | None]:
    """The distilled examples and the Delta version read (empty and None before the first materialization)."""
    version = delta.version(GATE_TRAINING_EXAMPLES)
    if version is None:
        return pl.DataFrame(schema=ex.EXAMPLES_SCHEMA), None
    return delta.read(GATE_TRAINING_EXAMPLES, version=version), version


def held_out_verdict(context: dg.AssetExecutionContext, embedder, artifacts, candidate, delta: DeltaLakeStorage):
    """Judge `candidate` on the held-out golden split against the best gate so far: every gate in the
    artifact store (each served once) scored on the same held-out cases today, ranked by the lower
    bound of its gated accuracy; returns (verdict, the serving gate or None, the best gate's version).

    The serving gate (this asset's latest materialization) is what stays when the candidate loses.
    """
    serving_version = _recorded(context.instance, EMBEDDING_GATE, "gate_version")
    held_out = labelled_set("held_out", delta)
    vectors = embedder.encode([redact_cached(t) for t in held_out.texts])
    labels = held_out.labels
    scored, serving = [], None
    for version in stored_gate_versions(artifacts):
        try:
            gate = load_gate(artifacts, version)
        except (GateNotFound, GateIntegrityError) as exc:
            context.log.warning(f"gate {version} in the artifact store cannot be loaded ({exc}): not compared")
            continue
        if list(gate.labels) != list(candidate.labels):  # another domain pack's gate
            continue
        scored.append((version, gated_score(gate, vectors, labels)))
        if version == str(serving_version):
            serving = gate
    if serving_version is not None and serving is None:
        context.log.warning(f"serving gate {serving_version} is not in the artifact store: nothing to compare with")
    best = best_of(scored)
    verdict = judge(gated_score(candidate, vectors, labels), best[1] if best else None,
                    against=f"the best gate so far ({best[0]})" if best else "the best gate so far")
    return verdict, serving, best[0] if best else None


def verdict_metadata(verdict, examples_version: int | None, sources: dict, best_version: str | None = None) -> dict:
    return {
        **({GATE_EXAMPLES_VERSION_KEY: examples_version} if examples_version is not None else {}),
        "training_sources": dg.MetadataValue.json(sources),
        "held_out_candidate": dg.MetadataValue.json(verdict.candidate.as_dict()),
        # the gate compared with: the best so far on today's held-out cases (not only the one serving)
        "held_out_best_so_far": dg.MetadataValue.json(
            {"gate_version": best_version, **verdict.serving.as_dict()} if verdict.serving else {}),
        "candidate_accepted": verdict.accepted,
        "held_out_verdict": verdict.reason,
    }
