"""The ingest domain's `defs` load once the lead binds resources, and keep their public names."""

from __future__ import annotations

import dagster as dg

from llm_assets.ingest.definitions import defs
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource


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
    assert [s.name for s in repo.sensor_defs] == ["kafka_events_sensor"]
