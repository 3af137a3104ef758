"""`kafka_events_sensor` ticks against a real tansu broker, runs on a real Delta root."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest

from llm_assets.ingest.assets import raw_events
from llm_assets.ingest.batches import IngestCursor
from llm_assets.ingest.local_runner import drain_topic, ingest_definitions, produce_sample_messages
from llm_assets.local_broker import create_topics, delete_topic, free_port
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource
from llm_assets.sample_data.generator import generate_messages
from llm_assets.sensors.kafka_events import BATCH_TAG, KafkaSensorSettings, build_kafka_events_sensor
from llm_assets.settings import CONSUMER_GROUP


def _event(event_id: str, ts: str) -> tuple[bytes, bytes]:
    return event_id.encode(), json.dumps({
        "event_id": event_id, "source_system": "ledger", "event_ts": ts, "partner_id": "P-001",
        "entity_id": "ENT-00001", "payload_raw": f"case text of {event_id}"}).encode()


@pytest.fixture
def kafka(kafka_broker):
    return KafkaResource(bootstrap_servers=kafka_broker)


@pytest.fixture
def resources(kafka, tmp_path):
    return {"kafka": kafka, "delta": DeltaLakeStorage(root=str(tmp_path / "delta"))}


def _sensor(topic, **limits):
    settings = KafkaSensorSettings(topic=topic, time_budget_s=15, idle_timeout_s=0.5, **limits)
    return build_kafka_events_sensor(settings, name="test_kafka_events_sensor")


def _tick(sensor, instance, resources, cursor=None):
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                                        sensor_name=sensor.name,
                                                        definitions=ingest_definitions(resources, sensor)))


def _execute(requests, instance, resources):
    defs = ingest_definitions(resources)
    return [defs.resolve_job_def(r.job_name).execute_in_process(
        run_config=r.run_config, partition_key=r.partition_key, tags=r.tags, instance=instance,
        raise_on_error=False).success for r in requests]


def test_sensor_requests_one_run_per_event_date_with_unique_keys_and_advances_the_cursor(
        kafka, resources, make_topic):
    topic = make_topic(partitions=2)
    produce_sample_messages(kafka, topic, [_event("a", "2026-11-18T10:00:00Z"), _event("b", "2026-11-19T10:00:00Z"),
                                           (b"bad", b"not json"), _event("c", "2026-11-18T12:00:00+02:00")])
    instance = dg.DagsterInstance.ephemeral()
    tick = _tick(_sensor(topic), instance, resources)

    requests = {r.partition_key or "rejected": r for r in tick.run_requests}
    assert set(requests) == {"2026-11-18", "2026-11-19", "rejected"}
    assert requests["2026-11-18"].job_name == "ingest_events_job"
    assert requests["rejected"].job_name == "ingest_rejected_events_job"
    for target, request in requests.items():
        assert re.fullmatch(rf"{re.escape(topic)}:g0:(p\d+:\d+-\d+,?)+:{target}", request.run_key)
        assert "case text" not in json.dumps(request.run_config)  # offsets only, never payloads
    assert len({r.run_key for r in tick.run_requests}) == 3

    cursor = IngestCursor.model_validate_json(tick.cursor)
    assert sum(cursor.next_offsets.values()) == 4
    assert len(cursor.pending) == 1 and sorted(cursor.pending[0].run_keys) == sorted(requests[k].run_key
                                                                                       for k in requests)
    lag = tick.asset_events[0]
    assert lag.asset_key == raw_events.key and lag.metadata["consumer_lag_total"].value == 0


def test_offsets_are_committed_to_the_group_only_after_the_runs_succeed(kafka, resources, make_topic, tmp_path):
    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event("a", "2026-11-18T10:00:00Z"), _event("b", "2026-11-19T10:00:00Z")])
    instance, sensor = dg.DagsterInstance.ephemeral(), _sensor(topic)
    first = _tick(sensor, instance, resources)
    assert len(first.run_requests) == 2
    assert kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: None}

    # One run fails (its Delta root is a file), one succeeds: nothing may be committed.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    broken = {**resources, "delta": DeltaLakeStorage(root=str(blocked))}
    assert _execute(first.run_requests[:1], instance, broken) == [False]
    assert _execute(first.run_requests[1:], instance, resources) == [True]
    second = _tick(sensor, instance, resources, first.cursor)
    assert "failed" in second.skip_message and first.run_requests[0].run_key in second.skip_message
    assert kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: None}

    # Re-executing the failed run (same tags) completes the batch: the next tick commits.
    assert _execute(first.run_requests[:1], instance, resources) == [True]
    third = _tick(sensor, instance, resources, second.cursor)
    assert third.run_requests == [] and "No new messages" in third.skip_message
    assert kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: 2}
    assert IngestCursor.model_validate_json(third.cursor).pending == []


def test_sensor_resumes_from_its_cursor_after_a_restart_and_never_writes_a_message_twice(
        kafka, resources, make_topic):
    topic = make_topic(partitions=2)
    messages = generate_messages(60, days=2)
    produce_sample_messages(kafka, topic, messages)
    instance, sensor = dg.DagsterInstance.ephemeral(), _sensor(topic, max_messages=25)

    before = drain_topic(instance, resources, sensor=sensor, max_ticks=2)  # stops mid-topic
    assert before["skip_reason"] is None
    after = drain_topic(instance, resources, sensor=sensor, cursor=before["cursor"])  # a "restarted" daemon
    assert "No new messages" in after["skip_reason"]
    assert not set(before["run_keys"]) & set(after["run_keys"])
    assert not before["failed_run_keys"] and not after["failed_run_keys"]

    # The batches tile every partition's offsets exactly once.
    batches = {run.tags[BATCH_TAG] for run in instance.get_runs()}
    spans: dict[int, list[tuple[int, int]]] = {}
    for batch in batches:
        for p, s, e in re.findall(r"p(\d+):(\d+)-(\d+)", batch.split(":g", 1)[1]):
            spans.setdefault(int(p), []).append((int(s), int(e)))
    read = 0
    for ranges in spans.values():
        ranges.sort()
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        read += ranges[-1][1] - ranges[0][0]
    assert read == len(messages) and len(batches) >= 3

    rows = resources["delta"].read("raw/events")
    valid_ids = {m.key.decode() for m in messages if m.kind == "valid"}
    assert rows.height == len(valid_ids) and set(rows["event_id"]) == valid_ids
    assert resources["delta"].count("raw/rejected_events") == sum(m.kind.startswith("malformed") for m in messages)
    final = IngestCursor.model_validate_json(after["cursor"])
    assert final.pending == [] and kafka.committed_offsets(CONSUMER_GROUP, topic, [0, 1]) == final.next_offsets


def test_sensor_skips_with_a_reason_when_nothing_is_new(resources, make_topic):
    tick = _tick(_sensor(make_topic()), dg.DagsterInstance.ephemeral(), resources)
    assert tick.run_requests == [] and "No new messages on" in tick.skip_message


def test_sensor_skips_with_a_clear_reason_when_the_broker_is_unreachable(resources):
    down = {**resources, "kafka": KafkaResource(bootstrap_servers=f"127.0.0.1:{free_port()}")}
    cursor = IngestCursor(topic="events.raw", next_offsets={0: 42}).dump()
    tick = _tick(build_kafka_events_sensor(KafkaSensorSettings(connect_timeout_s=1)), dg.DagsterInstance.ephemeral(),
                 down, cursor)
    assert tick.run_requests == [] and "unreachable" in tick.skip_message
    assert tick.cursor == cursor


def test_sensor_skips_when_the_topic_does_not_exist(resources):
    tick = _tick(_sensor("no-such-topic-x1"), dg.DagsterInstance.ephemeral(), resources)
    assert "does not exist" in tick.skip_message


def test_recreated_topic_is_reported_and_read_from_its_earliest_offset(kafka, kafka_broker, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event(f"old-{i}", "2026-11-18T10:00:00Z") for i in range(5)])
    instance, sensor = dg.DagsterInstance.ephemeral(), _sensor(topic)
    cursor = drain_topic(instance, resources, sensor=sensor)["cursor"]

    delete_topic(kafka_broker, topic)
    create_topics(kafka_broker, {topic: 1})
    empty = _tick(sensor, instance, resources, cursor)
    assert "was recreated" in empty.skip_message and "earliest offset" in empty.skip_message
    assert IngestCursor.model_validate_json(empty.cursor).generation == 1

    produce_sample_messages(kafka, topic, [_event(f"new-{i}", "2026-11-18T10:00:00Z") for i in range(2)])
    summary = drain_topic(instance, resources, sensor=sensor, cursor=empty.cursor)
    assert [k.split(":")[1:3] for k in summary["run_keys"]] == [["g1", "p0"]]
    ids = set(resources["delta"].read("raw/events")["event_id"])
    assert ids == {f"old-{i}" for i in range(5)} | {"new-0", "new-1"}


def test_cursor_beyond_the_log_end_is_reported_and_reset_to_the_earliest_offset(kafka, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event(f"e{i}", "2026-11-18T10:00:00Z") for i in range(3)])
    instance, sensor = dg.DagsterInstance.ephemeral(), _sensor(topic)
    stale = IngestCursor(topic=topic, topic_id=kafka.topic_id(topic), next_offsets={0: 100}).dump()
    tick = _tick(sensor, instance, resources, stale)
    assert "cursor beyond the log end" in tick.skip_message and "cursor 100, log ends at 3" in tick.skip_message
    recovered = IngestCursor.model_validate_json(tick.cursor)
    assert recovered.next_offsets == {} and recovered.generation == 1

    summary = drain_topic(instance, resources, sensor=sensor, cursor=tick.cursor)
    assert summary["run_keys"] == [f"{topic}:g1:p0:0-3:2026-11-18"]
    assert resources["delta"].count("raw/events") == 3
