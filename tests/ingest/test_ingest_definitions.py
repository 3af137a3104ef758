"""The ingest domain's `defs` load once the root binds resources, and keep their public names;
the root code location registers `kafka_events_sensor` over the ingest jobs."""

from __future__ import annotations

import dagster as dg
import pytest

from llm_assets.ingest.definitions import defs
from llm_assets.partitions import daily_partitions
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource

pytestmark = pytest.mark.unit


def test_ingest_defs_load_with_the_shared_resource_keys(tmp_path):
    bound = dg.Definitions.merge(defs, dg.Definitions(resources={
        "kafka": KafkaResource(bootstrap_servers="127.0.0.1:9092"), "delta": DeltaLakeStorage(root=str(tmp_path))}))
    dg.Definitions.validate_loadable(bound)
    repo = bound.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} == {"raw/events",
                                                                                   "raw/rejected_events"}
    assert {c.name for c in repo.asset_graph.asset_check_keys} == {"raw_events_contract",
                                                                   "raw_events_unique_event_id"}
    assert {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")} == {
        "ingest_events_job", "ingest_rejected_events_job"}
    assert list(repo.sensor_defs) == []  # sensors stand above the domains: the root registers them


def test_the_code_location_registers_the_kafka_sensor_over_the_ingest_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    from llm_assets.definitions import defs as root

    sensor = root.resolve_sensor_def("kafka_events_sensor")
    assert {j.name for j in sensor.jobs} == {"ingest_events_job", "ingest_rejected_events_job"}
    assert set(sensor.required_resource_keys) == {"kafka", "kafka_ingest"}
    assert root.resolve_job_def("ingest_events_job").partitions_def == daily_partitions
