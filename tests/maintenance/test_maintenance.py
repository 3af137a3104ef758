"""Table maintenance beside running writers: compaction and checkpoints lose and double nothing,
and the numbers land on each table's asset; retention removes only what is past it, and says so."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from llm_assets.asset_keys import ENRICHED_CASES, RAW_EVENTS, REJECTED_EVENTS, RESULT_CACHE
from llm_assets.maintenance.jobs import delta_maintenance_job, retention_job
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.storage.maintenance import footprint, partition_footprints

pytestmark = pytest.mark.integration

DAY = "2026-12-07"


def _batch(n: int, start: int, day: str = DAY) -> pl.DataFrame:
    return pl.DataFrame({"event_id": [f"e{i:06d}" for i in range(start, start + n)], "event_date": [day] * n,
                         "payload": [f"case {i}" for i in range(start, start + n)]})


def _observations(result, key: dg.AssetKey) -> list[dict]:
    return [e.event_specific_data.asset_observation.metadata for e in result.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
            and e.event_specific_data.asset_observation.asset_key == key]


def test_compaction_beside_micro_batches_loses_and_doubles_nothing(tmp_path):
    delta = DeltaLakeStorage(root=str(tmp_path / "delta"))
    for b in range(12):  # a busy morning: many small files in today's partition
        delta.merge(RAW_EVENTS, _batch(20, b * 20), ["event_id"], partition_column="event_date", partition_value=DAY)
    assert partition_footprints(delta.table(RAW_EVENTS), "event_date")[DAY].files == 12

    errors: list[BaseException] = []

    def writer() -> None:  # micro-batches keep coming, each with 5 redeliveries of earlier events
        try:
            for b in range(12, 40):
                batch = pl.concat([_batch(20, b * 20), _batch(5, (b - 1) * 20)])
                delta.merge(RAW_EVENTS, batch, ["event_id"], partition_column="event_date", partition_value=DAY)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    runs = []
    while thread.is_alive():
        runs.append(delta_maintenance_job.execute_in_process(
            resources={"delta": delta}, run_config={"ops": {"maintain_delta_tables": {"config": {"min_files": 2}}}}))
    thread.join()
    assert errors == [] and all(r.success for r in runs)

    stored = delta.read(RAW_EVENTS)
    assert stored.height == 40 * 20 and stored["event_id"].n_unique() == stored.height  # every row, once
    assert set(stored["event_id"]) == {f"e{i:06d}" for i in range(800)}

    final = delta_maintenance_job.execute_in_process(
        resources={"delta": delta}, run_config={"ops": {"maintain_delta_tables": {"config": {"min_files": 2}}}})
    meta = _observations(final, RAW_EVENTS)[0]
    assert meta["maintenance/files_after"].value <= 2 < meta["maintenance/files_before"].value or \
        meta["maintenance/files_before"].value <= 2
    assert footprint(delta.table(RAW_EVENTS)).files <= 2
    assert delta.read(RAW_EVENTS).height == 800
    assert meta["maintenance/checkpoint_version"].value == delta.version(RAW_EVENTS)


def test_vacuum_keeps_what_a_recent_snapshot_needs(tmp_path):
    delta = DeltaLakeStorage(root=str(tmp_path / "delta"))
    for b in range(10):
        delta.merge(ENRICHED_CASES, _batch(10, b * 10), ["event_id"], partition_column="event_date", partition_value=DAY)
    before = delta.version(ENRICHED_CASES)
    result = delta_maintenance_job.execute_in_process(resources={"delta": delta}, run_config={
        "ops": {"maintain_delta_tables": {"config": {"min_files": 2, "vacuum": True}}}})
    meta = _observations(result, ENRICHED_CASES)[0]
    assert meta["maintenance/files_vacuumed"].value == 0  # the replaced files are minutes old: kept
    assert delta.read(ENRICHED_CASES).height == 100
    assert delta.scan(ENRICHED_CASES, version=before).collect().height == 100  # time travel still works


def test_retention_removes_only_what_is_past_it_and_says_what(tmp_path):
    delta = DeltaLakeStorage(root=str(tmp_path / "delta"))
    today = datetime.now(timezone.utc)
    old_day, new_day = (today - timedelta(days=40)).strftime("%Y-%m-%d"), today.strftime("%Y-%m-%d")
    for day, start in ((old_day, 0), (new_day, 100)):
        delta.merge(RAW_EVENTS, _batch(10, start, day), ["event_id"], partition_column="event_date", partition_value=day)
    delta.merge(REJECTED_EVENTS, pl.DataFrame({"message_sha256": ["a", "b"], "error": ["x", "y"],
                                               "seen_at": [today - timedelta(days=40), today]}), ["message_sha256"])
    delta.merge(RESULT_CACHE, pl.DataFrame({"cache_key": ["k1", "k2", "k3"],
                                            "cached_at": [today - timedelta(days=45), today - timedelta(days=1), today]}),
                ["cache_key"])

    result = retention_job.execute_in_process(resources={"delta": delta}, run_config={"ops": {"apply_retention": {
        "config": {"raw_events_days": 30, "rejected_events_days": 30, "result_cache_days": 30}}}})

    assert result.success
    assert set(delta.read(RAW_EVENTS)["event_date"]) == {new_day}
    assert delta.read(REJECTED_EVENTS)["message_sha256"].to_list() == ["b"]
    assert sorted(delta.read(RESULT_CACHE)["cache_key"]) == ["k2", "k3"]
    raw = _observations(result, RAW_EVENTS)[0]
    assert raw["retention/rows_removed"].value == 10 and raw["retention/partitions_removed"].value == [old_day]
    assert _observations(result, RESULT_CACHE)[0]["retention/rows_removed"].value == 1
    assert result.output_for_node("apply_retention")["raw/events"]["partitions"] == [old_day]
