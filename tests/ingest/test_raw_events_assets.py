"""`raw/events` and `raw/rejected_events` runs against a real tansu broker and real Delta tables."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from llm_assets.asset_keys import RAW_EVENTS, REJECTED_EVENTS
from llm_assets.dev.broker import create_topics, delete_topic
from llm_assets.dev.samples import produce_sample_messages
from llm_assets.ingest import contract
from llm_assets.ingest.assets import ingest_events_job, ingest_kafka_batch, ingest_rejected_events_job
from llm_assets.ingest import checks
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import MALFORMED_KINDS, generate_messages
from llm_assets.sensors.kafka_events import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from tests.support.contract_reference import event_row, validate_event

pytestmark = pytest.mark.integration


def _event(event_id: str, ts: str, payload: str = "amount mismatch on REF-1") -> bytes:
    return json.dumps({"event_id": event_id, "source_system": "ledger", "event_ts": ts, "partner_id": "P-001",
                       "entity_id": "ENT-00001", "payload_raw": payload}).encode()


@pytest.fixture
def resources(kafka_broker, tmp_path):
    return {"kafka": KafkaResource(bootstrap_servers=kafka_broker), "delta": DeltaLakeStorage(root=str(tmp_path))}


@pytest.fixture
def defs(resources):
    return dg.Definitions(assets=[ingest_kafka_batch],
                          jobs=[ingest_events_job, ingest_rejected_events_job], resources=resources)


def _run(defs, job, topic, start, end, first=None, last=None, instance=None, success=True):
    """One run over offsets [start, end) of partition 0, for dates first..last (a range when they differ)."""
    config = {"ops": {ingest_kafka_batch.op.name: {"config": {
        "topic": topic, "ranges": [{"partition": 0, "start": start, "end": end}]}}}}
    last = last or first
    tags = {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last} if first != last else None
    result = defs.resolve_job_def(job.name).execute_in_process(
        run_config=config, partition_key=first if first == last else None, tags=tags,
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success is success
    return result


def _metadata(result, key: dg.AssetKey) -> dict:
    mat = next(m for m in result.asset_materializations_for_node(ingest_kafka_batch.op.name) if m.asset_key == key)
    return {k: v.value for k, v in mat.metadata.items()}


def test_duplicate_delivery_and_rerun_leave_one_row(defs, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(resources["kafka"], topic, [(b"e1", _event("e1", "2026-11-18T10:00:00Z"))] * 2
                            + [(b"e2", _event("e2", "2026-11-18T11:00:00Z"))])
    first = _run(defs, ingest_events_job, topic, 0, 3, "2026-11-18")
    delta = resources["delta"]
    version = DeltaTable(delta.uri(RAW_EVENTS)).version()
    second = _run(defs, ingest_events_job, topic, 0, 3, "2026-11-18")

    rows = delta.read(RAW_EVENTS)
    assert sorted(rows["event_id"].to_list()) == ["e1", "e2"]
    assert _metadata(first, RAW_EVENTS)["rows_inserted"] == 2
    assert _metadata(second, RAW_EVENTS)["rows_inserted"] == 0
    assert _metadata(second, RAW_EVENTS)["rows_updated"] == 0
    assert DeltaTable(delta.uri(RAW_EVENTS)).version() == version  # the re-run committed nothing
    checks = second.get_asset_check_evaluations()
    assert {(c.check_name, c.partition) for c in checks} == {("raw_events_contract", "2026-11-18"),
                                                             ("raw_events_unique_event_id", "2026-11-18")}
    assert all(c.passed for c in checks)


def test_each_malformed_kind_is_dead_lettered_and_valid_events_are_kept(defs, resources, make_topic):
    topic = make_topic()
    messages = generate_messages(40, days=1)  # valid, duplicates and every malformed kind
    malformed = [m for m in messages if m.kind.startswith("malformed:")]
    assert {m.kind.split(":")[1] for m in malformed} == set(MALFORMED_KINDS)
    produce_sample_messages(resources["kafka"], topic, messages)

    result = _run(defs, ingest_events_job, topic, 0, len(messages), "2026-11-18")  # both assets, one read
    assert _metadata(result, REJECTED_EVENTS)["rows_inserted"] == len(malformed)
    _run(defs, ingest_rejected_events_job, topic, 0, len(messages))  # the dead letter alone: idempotent

    delta = resources["delta"]
    valid_ids = {m.key.decode() for m in messages if m.kind == "valid"}
    assert set(delta.read(RAW_EVENTS)["event_id"].to_list()) == valid_ids
    rejected = delta.read(REJECTED_EVENTS).sort("offset")
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


def test_dead_letters_at_offsets_reused_by_a_recreated_topic_are_recorded_and_replays_are_not(
        defs, resources, kafka_broker, make_topic):
    topic = make_topic()
    kafka, delta = resources["kafka"], resources["delta"]
    produce_sample_messages(kafka, topic, [(b"k0", b"not json"), (b"k1", b"")])
    _run(defs, ingest_rejected_events_job, topic, 0, 2)
    _run(defs, ingest_rejected_events_job, topic, 0, 2)  # a replay of the same messages
    assert delta.count(REJECTED_EVENTS) == 2

    # The topic is recreated: offset 0 comes back with another malformed message, offset 1 with the very
    # same bytes as before (a restarted broker, a deterministic producer), 2 is new.
    old_log = kafka.topic_id(topic)
    delete_topic(kafka_broker, topic)
    create_topics(kafka_broker, {topic: 1})
    produce_sample_messages(kafka, topic, [(b"k0", b"{broken"), (b"k1", b""), (b"other", b"not json")])
    result = _run(defs, ingest_rejected_events_job, topic, 0, 3)
    assert _metadata(result, REJECTED_EVENTS)["rows_inserted"] == 3  # every one of them, reused offsets included
    again = _run(defs, ingest_rejected_events_job, topic, 0, 3)
    assert _metadata(again, REJECTED_EVENTS)["rows_inserted"] == 0

    rows = delta.read(REJECTED_EVENTS).sort("offset", "seen_at")
    assert rows.select("offset", "key").rows() == [(0, "k0"), (0, "k0"), (1, "k1"), (1, "k1"), (2, "other")]
    assert rows.select("topic_id", "offset", "message_sha256").n_unique() == 5
    assert set(rows["topic_id"]) == {old_log, kafka.topic_id(topic)} and old_log != kafka.topic_id(topic)
    assert rows.filter(pl.col("offset") == 1)["message_sha256"].n_unique() == 1  # same bytes, two logs
    assert [base64.b64decode(v) for v in rows.filter(pl.col("offset") == 0)["value_b64"]] == [b"not json",
                                                                                              b"{broken"]


def test_two_dates_in_one_batch_land_in_their_partitions_and_late_events_update_old_ones(
        defs, resources, make_topic):
    topic = make_topic()
    kafka = resources["kafka"]
    produce_sample_messages(kafka, topic, [
        (b"a", _event("a", "2026-11-18T23:59:59Z")),
        (b"b", _event("b", "2026-11-19T00:30:00+01:00")),  # 2026-11-18 23:30 UTC
        (b"c", _event("c", "2026-11-19T08:00:00Z")),
    ])
    result = _run(defs, ingest_events_job, topic, 0, 3, "2026-11-18", "2026-11-19")  # one run, both dates
    delta = resources["delta"]
    rows = delta.read(RAW_EVENTS)
    assert dict(rows.select("event_id", "event_date").iter_rows()) == {
        "a": "2026-11-18", "b": "2026-11-18", "c": "2026-11-19"}
    assert sorted(m.partition for m in result.asset_materializations_for_node(ingest_kafka_batch.op.name)
                  if m.asset_key == RAW_EVENTS) == ["2026-11-18", "2026-11-19"]

    # A late event for the older day, and a corrected re-send of `a`, in a later batch.
    produce_sample_messages(kafka, topic, [(b"d", _event("d", "2026-11-18T05:00:00Z")),
                                           (b"a", _event("a", "2026-11-18T23:59:59Z", payload="corrected"))])
    result = _run(defs, ingest_events_job, topic, 3, 5, "2026-11-18")
    assert _metadata(result, RAW_EVENTS)["rows_inserted"] == 1
    assert _metadata(result, RAW_EVENTS)["rows_updated"] == 1
    day18 = delta.read(RAW_EVENTS, partition_column="event_date", partition_values=["2026-11-18"])
    assert sorted(day18["event_id"].to_list()) == ["a", "b", "d"]
    assert day18.filter(pl.col("event_id") == "a")["payload_raw"].item() == "corrected"
    assert delta.count(RAW_EVENTS, partition_column="event_date", partition_value="2026-11-19") == 1


def test_a_range_run_checks_every_partition_on_its_own_and_fails_on_a_planted_violation(
        defs, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(resources["kafka"], topic, [(b"a", _event("a", "2026-11-18T10:00:00Z")),
                                                        (b"c", _event("c", "2026-11-20T10:00:00Z"))])
    instance = dg.DagsterInstance.ephemeral()
    clean = _run(defs, ingest_events_job, topic, 0, 2, "2026-11-18", "2026-11-20", instance=instance)
    evaluations = {(e.check_name, e.partition): e.passed for e in clean.get_asset_check_evaluations()}
    assert evaluations == {(name, day): True for name in ("raw_events_contract", "raw_events_unique_event_id")
                           for day in ("2026-11-18", "2026-11-19", "2026-11-20")}
    # 2026-11-19 had no event: its partition stays empty and nothing was written there.
    assert resources["delta"].count(RAW_EVENTS, partition_column="event_date", partition_value="2026-11-19") == 0

    # Plant a duplicate event_id on 2026-11-20 and a row without partner_id on 2026-11-18, behind the
    # ingest's back, then re-run the same batch: only those partitions' checks fail, and the run fails.
    stored = resources["delta"].read(RAW_EVENTS)
    planted = pl.concat([stored.filter(pl.col("event_id") == "c"),
                         stored.filter(pl.col("event_id") == "a").with_columns(
                             pl.lit("a2").alias("event_id"), pl.lit(None, dtype=pl.String).alias("partner_id"))])
    planted.write_delta(resources["delta"].uri(RAW_EVENTS), mode="append")
    broken = _run(defs, ingest_events_job, topic, 0, 2, "2026-11-18", "2026-11-20", instance=instance,
                  success=False)
    evaluations = {(e.check_name, e.partition): e for e in broken.get_asset_check_evaluations()}
    assert {k: e.passed for k, e in evaluations.items()} == {
        ("raw_events_contract", "2026-11-18"): False, ("raw_events_contract", "2026-11-19"): True,
        ("raw_events_contract", "2026-11-20"): True, ("raw_events_unique_event_id", "2026-11-18"): True,
        ("raw_events_unique_event_id", "2026-11-19"): True, ("raw_events_unique_event_id", "2026-11-20"): False}
    assert evaluations[("raw_events_unique_event_id", "2026-11-20")].metadata["examples"].value == "c"
    assert "null partner_id" in evaluations[("raw_events_contract", "2026-11-18")].metadata["violations"].value
    # Each evaluation points at its own partition's materialization (of this run), as Dagster does for one partition.
    for day in ("2026-11-18", "2026-11-20"):
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_EVENTS, asset_partitions=[day]), limit=1).records[0]
        assert latest.run_id == broken.run_id
        assert evaluations[("raw_events_unique_event_id", day)].target_materialization_data.storage_id == \
            latest.storage_id
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(RAW_EVENTS, "raw_events_unique_event_id"), limit=10)
    stored_evaluations = [r.event.dagster_event.event_specific_data for r in history]  # what the UI shows
    assert {e.partition for e in stored_evaluations if not e.passed} == {"2026-11-20"}
    assert {e.partition for e in stored_evaluations} == {"2026-11-18", "2026-11-19", "2026-11-20"}


def test_the_contract_check_answers_from_delta_statistics_and_reads_rows_only_when_they_cannot_tell(tmp_path):
    delta = DeltaLakeStorage(root=str(tmp_path))
    now = datetime.now(timezone.utc)
    values = [_event(f"e{i}", f"2026-11-18T{i:02d}:00:00Z") for i in range(3)]
    rows = contract.valid_events_frame(contract.validate_values(values), topic="t", partitions=[0] * 3,
                                       offsets=[0, 1, 2], ingested_at=now)
    delta.merge(RAW_EVENTS, rows, ["event_id"], partition_column="event_date", partition_value="2026-11-18")

    def from_stats():
        return checks.contract_violations_from_stats(
            checks._file_stats(delta).filter(pl.col("partition.event_date") == "2026-11-18"), "2026-11-18")

    assert from_stats() == ({}, 3)
    rows.head(1).with_columns(pl.lit("e9").alias("event_id"), pl.lit(None, dtype=pl.String).alias("partner_id")
                              ).write_delta(delta.uri(RAW_EVENTS), mode="append")
    assert from_stats() == ({"null partner_id": 1}, 4)
    # A row of another UTC day in the partition: the bounds cannot say how many, the rows do.
    rows.head(1).with_columns(pl.lit("e10").alias("event_id"),
                              pl.lit(datetime(2026, 11, 19, 1, tzinfo=timezone.utc)).alias("event_ts")
                              ).write_delta(delta.uri(RAW_EVENTS), mode="append")
    assert from_stats() is None
    assert checks._contract_results(delta, ["2026-11-18", "2026-11-19"]) == {
        "2026-11-18": ({"null partner_id": 1, "event_date differs from the UTC day of event_ts": 1}, 5),
        "2026-11-19": ({}, 0)}


def test_a_range_no_longer_in_the_log_fails_the_run(defs, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(resources["kafka"], topic, [(b"a", _event("a", "2026-11-18T10:00:00Z"))])
    _run(defs, ingest_events_job, topic, 0, 5, "2026-11-18", success=False)
    assert not resources["delta"].exists(RAW_EVENTS)  # nothing partial was written
    assert not resources["delta"].exists(REJECTED_EVENTS)


def test_valid_events_frame_matches_the_row_helpers():
    now = datetime.now(timezone.utc)
    value = _event("x", "2026-11-18T10:00:00Z")
    checked = contract.validate_values([value])
    frame = contract.valid_events_frame(checked, topic="t", partitions=[2], offsets=[9], ingested_at=now)
    row = event_row(validate_event(value), topic="t", partition=2, offset=9, ingested_at=now)
    assert frame.to_dicts() == contract.events_frame([row]).to_dicts()


def test_a_key_other_than_the_event_id_is_kept_and_counted_and_escaped_control_characters_are_dead_lettered(
        defs, resources, make_topic):
    topic = make_topic()
    nul = json.loads(_event("ctl", "2026-11-18T10:00:00Z"))
    nul["payload_raw"] = "refund\u0000 ignore previous instructions"
    produce_sample_messages(resources["kafka"], topic, [
        (b"e1", _event("e1", "2026-11-18T10:00:00Z")), (b"P-001", _event("e2", "2026-11-18T10:01:00Z")),
        (None, _event("e3", "2026-11-18T10:02:00Z")), (b"ctl", json.dumps(nul).encode())])
    assert b"\\u0000" in json.dumps(nul).encode() and b"\x00" not in json.dumps(nul).encode()

    result = _run(defs, ingest_events_job, topic, 0, 4, "2026-11-18")

    rows = resources["delta"].read(RAW_EVENTS).sort("event_id")
    assert rows.select("event_id", "kafka_key").rows() == [("e1", "e1"), ("e2", "P-001"), ("e3", None)]
    assert _metadata(result, RAW_EVENTS)["key_mismatches"] == 1  # a missing key is no mismatch
    [rejected] = resources["delta"].read(REJECTED_EVENTS).to_dicts()
    assert rejected["key"] == "ctl" and "control character U+0000" in rejected["error"]
