"""`monitoring/gate_precision` on real Delta tables, a real (small) gate in the artifact store and an
instance that records which gate serves: audits and ratings in, per-label numbers, the check's
severity and the shut-off out."""

from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl
import pytest

from llm_assets.asset_keys import EMBEDDING_GATE, ENRICHED_CASES, EVALUATION_RATINGS, GATE_PRECISION
from llm_assets.domain import current_pack
from llm_assets.evaluation.ratings import RATINGS_SCHEMA
from llm_assets.gate import health
from llm_assets.gate.model import save_gate, train_gate
from llm_assets.monitoring.gate_precision import MEETS_TARGET, gate_precision
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage

pytestmark = pytest.mark.integration

DAY = "2026-12-01"
LABELS = current_pack().labels


@pytest.fixture
def lake(tmp_path):
    delta = DeltaLakeStorage(root=str(tmp_path / "delta"))
    artifacts = ArtifactStore(root=str(tmp_path / "artifacts"))
    rng = np.random.default_rng(0)
    labels = [LABELS[i % len(LABELS)] for i in range(100)]
    centres = {label: rng.normal(size=8) * 4 for label in LABELS}
    gate = train_gate(np.array([centres[label] + rng.normal(size=8) for label in labels]), labels,
                      source_description="test clusters", cv_folds=3)
    save_gate(gate, artifacts)
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization(EMBEDDING_GATE, metadata={"gate_version": gate.version}))
    return delta, artifacts, instance, gate.version


def _enriched(delta: DeltaLakeStorage, rows: list[tuple[str, str, str]], version: str) -> None:
    frame = pl.DataFrame([{"event_id": e, "event_date": DAY, "label": label, "route": route, "gate_version": version}
                          for e, label, route in rows])
    delta.merge(ENRICHED_CASES, frame, ["event_id"], partition_column="event_date", partition_value=DAY)


def test_audits_and_ratings_give_each_label_its_precision_and_a_label_under_target_errors_and_is_shut_off(lake):
    delta, artifacts, instance, version = lake
    good, bad, rated = LABELS[0], LABELS[1], LABELS[2]
    gated = ([(f"g{n}", good, "gate") for n in range(12)] + [(f"b{n}", bad, "gate") for n in range(12)]
             + [(f"r{n}", rated, "gate") for n in range(2)] + [(f"l{n}", good, "llm") for n in range(6)])
    _enriched(delta, gated, version)
    at = datetime(2026, 12, 1, tzinfo=timezone.utc)
    health.record_audits(delta, pl.DataFrame(
        [{"event_id": f"g{n}", "event_date": DAY, "gate_version": version, "label": good, "audit_label": good,
          "audit_source": "llm", "audited_at": at} for n in range(12)]
        + [{"event_id": f"b{n}", "event_date": DAY, "gate_version": version, "label": bad,
            "audit_label": good if n < 9 else bad, "audit_source": "llm", "audited_at": at} for n in range(12)],
        schema=health.AUDITS_SCHEMA))
    # An analyst rated one gated case of `rated`: its label was wrong.
    ratings = pl.DataFrame([{"event_id": "r0", "event_date": DAY, "analyst": "ana", "label_correct": False,
                             "correct_label": good, "model_label": rated, "label": good}], schema=RATINGS_SCHEMA)
    delta.merge(EVALUATION_RATINGS, ratings, ["event_id"])

    result = dg.materialize([gate_precision], partition_key=DAY, instance=instance,
                            resources={"delta": delta, "artifacts": artifacts},
                            run_config={"ops": {"monitoring__gate_precision": {"config": {"min_audits_to_judge": 8}}}})

    assert result.success
    table = delta.read(GATE_PRECISION).filter(pl.col("event_date") == DAY)
    by_label = {r["label"]: r for r in table.iter_rows(named=True)}
    assert set(by_label) == set(LABELS)
    assert (by_label[good]["audited"], by_label[good]["confirmed"], by_label[good]["serving"]) == (12, 12, True)
    assert (by_label[bad]["audited"], by_label[bad]["confirmed"], by_label[bad]["serving"]) == (12, 3, False)
    assert by_label[bad]["upper"] < by_label[bad]["target"] <= 1
    assert (by_label[rated]["audited"], by_label[rated]["by_rating"], by_label[rated]["confirmed"]) == (1, 1, 0)
    assert by_label[good]["day_gated"] == 12  # the llm-decided cases are not gated ones
    assert set(health.read_shutoffs(delta, version)) == {bad}
    [seen] = [o.event_specific_data.asset_observation for o in result.get_asset_observation_events()]
    assert seen.asset_key == EMBEDDING_GATE and seen.metadata["shut_off_label"].value == bad
    [check] = result.get_asset_check_evaluations()
    assert check.asset_check_key.name == MEETS_TARGET and not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["under_target_point"].value == [bad]
    # `good` at 12/12 is under target only by its lower bound (0.76): a WARN-level finding, listed.
    assert set(check.metadata["under_target_lower_bound"].value) == {good, bad}
    metadata = result.asset_materializations_for_node("monitoring__gate_precision")[0].metadata
    assert metadata["precision/" + bad].value == 0.25 and metadata["labels_shut_off"].value == [bad]
    assert metadata["plot_precision"].value.startswith("![gate precision by label](data:image/png;base64,")

    # Run again: the rating is not counted twice, and nothing is shut off twice.
    again = dg.materialize([gate_precision], partition_key=DAY, instance=instance,
                           resources={"delta": delta, "artifacts": artifacts})
    assert again.success
    assert again.asset_materializations_for_node("monitoring__gate_precision")[0].metadata[
        "ratings_added_as_audits"].value == 0
    assert delta.read(GATE_PRECISION).height == len(LABELS)


def test_a_label_judged_only_by_its_lower_bound_warns(lake):
    delta, artifacts, instance, version = lake
    good = LABELS[0]
    _enriched(delta, [(f"g{n}", good, "gate") for n in range(10)], version)
    at = datetime(2026, 12, 1, tzinfo=timezone.utc)
    health.record_audits(delta, pl.DataFrame(
        [{"event_id": f"g{n}", "event_date": DAY, "gate_version": version, "label": good, "audit_label": good,
          "audit_source": "llm", "audited_at": at} for n in range(10)], schema=health.AUDITS_SCHEMA))

    result = dg.materialize([gate_precision], partition_key=DAY, instance=instance,
                            resources={"delta": delta, "artifacts": artifacts})

    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert health.read_shutoffs(delta, version) == {}
