"""`monitoring/drift_report` on a real lake: a day about something new drifts, the report says so
in a table and plots (read back from the instance's materialization events) and warns."""

from __future__ import annotations

import base64
import re

import dagster as dg
import polars as pl
import pytest

from llm_assets.asset_keys import DRIFT_REPORT
from llm_assets.monitoring.assets import drift_report
from llm_assets.resources.embedder import EmbedderResource
from tests.evaluation.lake import make_cases, write_cases
from tests.monitoring.test_drift import NEW_TOPIC_TEMPLATES

pytestmark = pytest.mark.integration

DAY = "2026-11-18"
REFERENCE = ("2026-11-15", "2026-11-16", "2026-11-17")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_a_day_about_something_new_drifts_with_plots_and_a_warning(delta):
    for n, day in enumerate(REFERENCE):
        write_cases(delta, make_cases(day, 30, seed=40 + n))
    new_texts = [t.format(n=k + 2, ref=f"REF-{700000 + k}", amount="120.00", email="ana@example.com",
                          phone="+44 20 7946 0958") for k, t in enumerate(NEW_TOPIC_TEMPLATES * 8)]
    write_cases(delta, make_cases(DAY, 40, seed=49, texts=new_texts))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([drift_report], partition_key=DAY, instance=instance,
                            resources={"delta": delta, "embedder": EmbedderResource()},
                            run_config={"ops": {"monitoring__drift_report": {"config": {"reference_days": 3}}}})
    assert result.success

    record = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=DRIFT_REPORT,
                                                                   asset_partitions=[DAY]), limit=1).records[0]
    metadata = record.asset_materialization.metadata
    assert metadata["drift_detected"].value is True and "embedding" in metadata["drifted"].value
    assert metadata["reference_window"].value == "2026-11-15 .. 2026-11-17"
    assert metadata["reference_cases"].value == 90 and metadata["current_cases"].value == 40
    assert "| embedding_domain_classifier_roc_auc |" in metadata["metrics"].value
    for name in ("plot_embedding", "plot_label_mix", "plot_confidence"):
        markdown = metadata[name].value
        found = re.fullmatch(r"!\[[^\]]+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
        assert found, name
        assert base64.b64decode(found.group(1)).startswith(PNG_SIGNATURE), name

    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "no_drift_detected" and check.passed is False
    assert check.severity == dg.AssetCheckSeverity.WARN

    rows = delta.read(DRIFT_REPORT)
    auc = rows.filter(pl.col("metric") == "embedding_domain_classifier_roc_auc").row(0, named=True)
    assert auc["drift_detected"] is True and auc["value"] > auc["threshold"]
    assert set(rows["event_date"]) == {DAY} and rows["reference_rows"].unique().to_list() == [90]
