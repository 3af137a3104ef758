"""Rows catch up with their dependencies: cases enriched before the embedding gate existed are
enriched again, once, by the next run of their date after it appears (route and versions updated,
one new publish per case, a bundle for the new content versions); a run after that changes nothing.
Real Delta, tansu, Milvus Lite and the packaged embedding model, one Dagster instance throughout."""

from __future__ import annotations

from collections import Counter
from datetime import date

import dagster as dg
import pytest

from llm_assets import settings
from llm_assets.asset_keys import ENRICHED_CASES
from llm_assets.dev.broker import create_topics
from llm_assets.enrichment import audit
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
from tests.enrichment.outbox_run import SEEDS, resources_of, run_day
from tests.enrichment.test_enriched_cases import _published
from tests.support.pipeline import materialize_keys, use_local_home, write_raw_events

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path, kafka_broker, monkeypatch):
    use_local_home(monkeypatch, tmp_path)
    generate_sample_data(tmp_path / "sample_data", n_events=40, days=1, start_date=date(2026, 8, 1))
    create_topics(kafka_broker, {settings.ENRICHED_TOPIC: 3})
    resources = resources_of(tmp_path, kafka_broker)
    (day,) = write_raw_events(resources["delta"], tmp_path / "sample_data")
    assert materialize_keys(resources, [*SEEDS, "kb/documents"]).success
    return resources, day


def _metadata(result, day: str) -> dict:
    (mat,) = [m for m in result.asset_materializations_for_node("enriched__cases") if m.partition == day]
    return {k: v.value for k, v in mat.metadata.items()}


def test_rows_enriched_before_the_gate_existed_are_enriched_again_once_when_it_appears(home, kafka_broker):
    resources, day = home
    instance = dg.DagsterInstance.ephemeral()
    before = Counter(k for k, _ in _published(kafka_broker))
    assert run_day(resources, day, instance).success
    first = resources["delta"].read(ENRICHED_CASES)
    assert first["gate_version"].null_count() == first.height  # no gate yet: decided without one

    gate = materialize_keys(resources, ["models/embedding_gate"], instance=instance)
    assert gate.success
    gate_version = gate.asset_materializations_for_node("models__embedding_gate")[0].metadata["gate_version"].value

    caught_up = run_day(resources, day, instance)  # what automation runs after the gate's update

    assert caught_up.success
    rows = resources["delta"].read(ENRICHED_CASES)
    assert sorted(rows["event_id"]) == sorted(first["event_id"])
    assert set(rows["gate_version"]) == {gate_version}
    assert all(mv.endswith(f"+gate:{gate_version}") for mv in rows["model_version"])
    assert "gate" in set(rows["route"])  # the gate decides what it is sure of now
    meta = _metadata(caught_up, day)
    assert meta["re_enriched_for_gate_or_kb"] == first.height and meta["cases_written"] == first.height
    published = Counter(k for k, _ in _published(kafka_broker)) - before
    assert published == Counter({i: 2 for i in first["event_id"]})  # once per content version
    bundles = resources["artifacts"].list(audit.bundle_folder(day))
    assert len(bundles) == 2

    again = run_day(resources, day, instance)
    assert again.success
    meta = _metadata(again, day)
    assert meta["cases_written"] == 0 and meta["published_to_cases_enriched"] == 0
    assert Counter(k for k, _ in _published(kafka_broker)) - before == published
