"""Precision, recall and action acceptance per model version, as analysts rated the cases."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest

from llm_assets.asset_keys import EVALUATION_QUALITY_METRICS, EVALUATION_RATINGS
from llm_assets.evaluation.assets import evaluation_quality_metrics
from llm_assets.evaluation.quality import quality_metrics
from llm_assets.evaluation.ratings import RATINGS_SCHEMA
from tests.support.pipeline import artifact_resources

pytestmark = pytest.mark.integration

DAY = "2026-11-18"
NOW = datetime(2026, 11, 19, tzinfo=timezone.utc)


def _ratings(rows: list[tuple]) -> pl.DataFrame:
    """(event_id, analyst, model_label, right label, proposed, accepted, model_version) per rating."""
    return pl.DataFrame([{
        "event_id": e, "event_date": DAY, "analyst": a, "label_correct": m == r, "correct_label": None if m == r else r,
        "model_label": m, "label": r, "actions_proposed": p, "actions_accepted": acc, "rated_at": NOW, "text": "t",
        "model_version": v, "prompt_version": "p", "source": "kafka", "source_ref": "x", "imported_at": NOW}
        for e, a, m, r, p, acc, v in rows], schema=RATINGS_SCHEMA)


RATED = _ratings([
    ("e1", "ana", "fraud_suspected", "fraud_suspected", ["escalate", "notify"], ["escalate", "notify"], "v1"),
    ("e2", "ana", "fraud_suspected", "partner_mismatch", ["escalate", "notify"], [], "v1"),
    ("e3", "ana", "partner_mismatch", "partner_mismatch", ["request", "correct"], ["request"], "v1"),
    ("e3", "bob", "partner_mismatch", "partner_mismatch", ["request", "correct"], ["request", "correct"], "v1"),
    ("e4", "bob", "other", "other", ["notify"], ["notify"], "v2"),
])


def _row(metrics: pl.DataFrame, version: str, label: str) -> dict:
    return metrics.filter((pl.col("model_version") == version) & (pl.col("label") == label)).row(0, named=True)


def test_precision_recall_and_acceptance_per_label_and_model_version():
    metrics = quality_metrics(RATED, day=DAY, computed_at=NOW)
    fraud = _row(metrics, "v1", "fraud_suspected")
    assert (fraud["predicted"], fraud["actual"], fraud["true_positives"]) == (2, 1, 1)
    assert fraud["precision"] == pytest.approx(0.5) and fraud["recall"] == pytest.approx(1.0)
    assert fraud["action_acceptance_rate"] == pytest.approx(2 / 4)
    partner = _row(metrics, "v1", "partner_mismatch")
    assert partner["precision"] == pytest.approx(1.0) and partner["recall"] == pytest.approx(2 / 3)
    assert partner["analysts"] == 2
    overall = _row(metrics, "v1", "all")
    assert overall["ratings"] == 4 and overall["precision"] == pytest.approx(3 / 4)
    assert overall["action_acceptance_rate"] == pytest.approx(5 / 8)
    assert _row(metrics, "v2", "all")["precision"] == pytest.approx(1.0)  # versions are never mixed
    assert quality_metrics(RATED.clear(), day=DAY, computed_at=NOW).is_empty()


def test_the_asset_replaces_the_days_metrics_with_the_ratings_as_they_are(delta, tmp_path):
    delta.merge(EVALUATION_RATINGS, RATED, ["event_id", "analyst"])
    result = dg.materialize([evaluation_quality_metrics], partition_key=DAY, resources={"delta": delta,
                                                                                     **artifact_resources(tmp_path)})
    assert result.success
    stored = delta.read(EVALUATION_QUALITY_METRICS)
    assert _row(stored, "v1", "all")["precision"] == pytest.approx(3 / 4)
    metadata = result.asset_materializations_for_node("evaluation__quality_metrics")[0].metadata
    assert "| v1 | fraud_suspected | 2 | 50% | 100% | 2/4 (50%) |" in metadata["metrics"].value
    # An analyst corrects a rating: the day's metrics follow, with no stale row left.
    delta.merge(EVALUATION_RATINGS, _ratings([("e2", "ana", "fraud_suspected", "fraud_suspected",
                                               ["escalate", "notify"], [], "v1")]), ["event_id", "analyst"])
    assert dg.materialize([evaluation_quality_metrics], partition_key=DAY, resources={"delta": delta,
                                                                                     **artifact_resources(tmp_path)}).success
    stored = delta.read(EVALUATION_QUALITY_METRICS)
    assert stored.filter(pl.col("model_version") == "v1")["label"].sort().to_list() == [
        "all", "fraud_suspected", "partner_mismatch"]
    assert _row(stored, "v1", "fraud_suspected")["precision"] == pytest.approx(1.0)


def test_an_analyst_who_contradicts_everyone_is_flagged_in_the_ui_until_a_reviewer_releases_them(delta, tmp_path):
    from llm_assets.evaluation.analysts import AnalystRegistry
    from llm_assets.resources.artifacts import ArtifactStore

    honest = [(f"h{i}", "ana", "fraud_suspected", "fraud_suspected", [], [], "v1") for i in range(12)]
    hostile = [(f"h{i}", "max", "fraud_suspected", "routing_error", [], [], "v1") for i in range(12)]
    delta.merge(EVALUATION_RATINGS, _ratings(honest + hostile), ["event_id", "analyst"])
    resources = {"delta": delta, **artifact_resources(tmp_path)}

    metadata = dg.materialize([evaluation_quality_metrics], partition_key=DAY, resources=resources
                              ).asset_materializations_for_node("evaluation__quality_metrics")[0].metadata
    assert metadata["analysts_flagged"].value == 1
    assert [f["analyst"] for f in metadata["flagged_analysts"].value] == ["max"]
    assert "agreement with other analysts" in metadata["flagged_analysts"].value[0]["reason"]
    assert "| ana | 12 | 1.00 | 12 |" in metadata["analyst_agreement"].value

    registry = AnalystRegistry(ArtifactStore(root=str(tmp_path / "artifacts")))
    registry.add("max")
    registry.release("max")  # a reviewer looked at max's ratings so far
    metadata = dg.materialize([evaluation_quality_metrics], partition_key=DAY, resources=resources
                              ).asset_materializations_for_node("evaluation__quality_metrics")[0].metadata
    assert metadata["analysts_flagged"].value == 0
