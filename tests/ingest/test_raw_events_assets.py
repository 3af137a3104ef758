"""`raw/events` and `raw/rejected_events` runs against a real tansu broker and real Delta tables."""

from __future__ import annotations

import base64
import json

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from llm_assets.ingest.assets import ingest_events_job, ingest_rejected_events_job, raw_events, raw_rejected_events
from llm_assets.ingest.checks import raw_events_checks
from llm_assets.ingest.local_runner import produce_sample_messages
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource
from llm_assets.sample_data.generator import MALFORMED_KINDS, generate_messages


def _event(event_id: str, ts: str, payload: str = "amount mismatch on REF-1") -> bytes:
    return json.dumps({"event_id": event_id, "source_system": "ledger", "event_ts": ts, "partner_id": "P-001",
                       "entity_id": "ENT-00001", "payload_raw": payload}).encode()


@pytest.fixture
def resources(kafka_broker, tmp_path):
    return {"kafka": KafkaResource(bootstrap_servers=kafka_broker), "delta": DeltaLakeStorage(root=str(tmp_path))}


@pytest.fixture
def defs(resources):
    return dg.Definitions(assets=[raw_events, raw_rejected_events], asset_checks=raw_events_checks,
                          jobs=[ingest_events_job, ingest_rejected_events_job], resources=resources)


def _run(defs, job, topic, start, end, partition_key=None, instance=None):
    op = (raw_events if job is ingest_events_job else raw_rejected_events).op.name
    config = {"ops": {op: {"config": {"topic": topic, "ranges": [{"partition": 0, "start": start, "end": end}]}}}}
    result = defs.resolve_job_def(job.name).execute_in_process(
        run_config=config, partition_key=partition_key, instance=instance or dg.DagsterInstance.ephemeral())
    assert result.success
    return result


def _metadata(result, key):
    mat = result.asset_materializations_for_node((raw_events if "events" == key else raw_rejected_events).op.name)[0]
    return {k: v.value for k, v in mat.metadata.items()}


def test_duplicate_delivery_and_rerun_leave_one_row(defs, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(resources["kafka"], topic, [(b"e1", _event("e1", "2026-11-18T10:00:00Z"))] * 2
                            + [(b"e2", _event("e2", "2026-11-18T11:00:00Z"))])
    first = _run(defs, ingest_events_job, topic, 0, 3, "2026-11-18")
    delta = resources["delta"]
    version = DeltaTable(delta.uri("raw/events")).version()
    second = _run(defs, ingest_events_job, topic, 0, 3, "2026-11-18")

    rows = delta.read("raw/events")
    assert sorted(rows["event_id"].to_list()) == ["e1", "e2"]
    assert _metadata(first, "events")["rows_inserted"] == 2
    assert _metadata(second, "events")["rows_inserted"] == 0
    assert _metadata(second, "events")["rows_updated"] == 0
    assert DeltaTable(delta.uri("raw/events")).version() == version  # the re-run committed nothing
    checks = second.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {"raw_events_contract", "raw_events_unique_event_id"}
    assert all(c.passed for c in checks)


def test_each_malformed_kind_is_dead_lettered_and_valid_events_are_kept(defs, resources, make_topic):
    topic = make_topic()
    messages = generate_messages(40, days=1)  # valid, duplicates and every malformed kind
    malformed = [m for m in messages if m.kind.startswith("malformed:")]
    assert {m.kind.split(":")[1] for m in malformed} == set(MALFORMED_KINDS)
    produce_sample_messages(resources["kafka"], topic, messages)

    _run(defs, ingest_events_job, topic, 0, len(messages), "2026-11-18")
    _run(defs, ingest_rejected_events_job, topic, 0, len(messages))
    _run(defs, ingest_rejected_events_job, topic, 0, len(messages))  # idempotent

    delta = resources["delta"]
    valid_ids = {m.key.decode() for m in messages if m.kind == "valid"}
    assert set(delta.read("raw/events")["event_id"].to_list()) == valid_ids
    rejected = delta.read("raw/rejected_events").sort("offset")
    assert rejected.height == len(malformed)
    by_key = {r["key"]: r for r in rejected.iter_rows(named=True)}
    for m in malformed:
        row = by_key[m.key.decode()]
        assert base64.b64decode(row["value_b64"]) == m.value
        assert row["error"] and row["topic"] == topic
    errors = " | ".join(rejected["error"].to_list())
    for reason in ("not JSON", "empty value", "NUL bytes", "missing required field event_id",
                   "RFC 3339", "wrong type", "byte limit"):
        assert reason in errors


def test_two_dates_in_one_batch_land_in_their_partitions_and_late_events_update_old_ones(
        defs, resources, make_topic):
    topic = make_topic()
    kafka = resources["kafka"]
    produce_sample_messages(kafka, topic, [
        (b"a", _event("a", "2026-11-18T23:59:59Z")),
        (b"b", _event("b", "2026-11-19T00:30:00+01:00")),  # 2026-11-18 23:30 UTC
        (b"c", _event("c", "2026-11-19T08:00:00Z")),
    ])
    for day in ("2026-11-18", "2026-11-19"):
        _run(defs, ingest_events_job, topic, 0, 3, day)
    delta = resources["delta"]
    rows = delta.read("raw/events")
    assert dict(rows.select("event_id", "event_date").iter_rows()) == {
        "a": "2026-11-18", "b": "2026-11-18", "c": "2026-11-19"}

    # A late event for the older day, and a corrected re-send of `a`, in a later batch.
    produce_sample_messages(kafka, topic, [(b"d", _event("d", "2026-11-18T05:00:00Z")),
                                           (b"a", _event("a", "2026-11-18T23:59:59Z", payload="corrected"))])
    result = _run(defs, ingest_events_job, topic, 3, 5, "2026-11-18")
    assert _metadata(result, "events")["rows_inserted"] == 1
    assert _metadata(result, "events")["rows_updated"] == 1
    day18 = delta.read("raw/events", partition_column="event_date", partition_values=["2026-11-18"])
    assert sorted(day18["event_id"].to_list()) == ["a", "b", "d"]
    assert day18.filter(pl.col("event_id") == "a")["payload_raw"].item() == "corrected"
    assert delta.count("raw/events", partition_column="event_date", partition_value="2026-11-19") == 1


def test_a_range_no_longer_in_the_log_fails_the_run(defs, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(resources["kafka"], topic, [(b"a", _event("a", "2026-11-18T10:00:00Z"))])
    op = raw_events.op.name
    result = defs.resolve_job_def(ingest_events_job.name).execute_in_process(
        run_config={"ops": {op: {"config": {"topic": topic, "ranges": [{"partition": 0, "start": 0, "end": 5}]}}}},
        partition_key="2026-11-18", instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    assert not resources["delta"].exists("raw/events")  # nothing partial was written
