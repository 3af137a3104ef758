"""`kafka_events_sensor` ticks against a real tansu broker, runs on a real Delta root."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest

from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS, REJECTED_EVENTS
from llm_assets.dev.broker import create_topics, delete_topic
from llm_assets.dev import daemon
from llm_assets.dev.daemon import QUIET_RUN_CONFIG, drain_topic, execute_run_request, ingest_definitions
from llm_assets.dev.process import free_port
from llm_assets.dev.samples import produce_sample_messages
from llm_assets.ingest.batches import IngestCursor
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaIngestSettings, KafkaResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_messages
from llm_assets.sensors.kafka_events import (BATCH_TAG, PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG,
                                             hot_path, kafka_events_sensor)
from llm_assets.settings import CONSUMER_GROUP

pytestmark = pytest.mark.integration


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


def _on(resources, topic, **limits):
    """The resources with the sensor pointed at `topic` (the `kafka_ingest` settings of a test)."""
    return {**resources, "kafka_ingest": KafkaIngestSettings(topic=topic, time_budget_s=15, idle_timeout_s=0.5,
                                                             **limits)}


def _tick(resources, instance, cursor=None):
    return daemon.tick(instance, resources, cursor)


def _execute(requests, instance, resources):
    defs = ingest_definitions(resources)
    return [execute_run_request(defs, r, instance).success for r in requests]


def test_sensor_requests_one_run_per_batch_over_its_date_range_and_advances_the_cursor(
        kafka, resources, make_topic):
    topic = make_topic(partitions=2)
    produce_sample_messages(kafka, topic, [_event("a", "2026-11-18T10:00:00Z"), _event("b", "2026-11-19T10:00:00Z"),
                                           (b"bad", b"not json"), _event("c", "2026-11-18T12:00:00+02:00")])
    instance, resources = dg.DagsterInstance.ephemeral(), _on(resources, topic)
    tick = _tick(resources, instance)

    [request] = tick.run_requests  # one run: both dates and the dead letter, from one read
    assert request.job_name == "ingest_events_job" and set(request.asset_selection) == {RAW_EVENTS, REJECTED_EVENTS}
    assert request.partition_key_range == dg.PartitionKeyRange("2026-11-18", "2026-11-19")
    assert (request.tags[PARTITION_RANGE_START_TAG], request.tags[PARTITION_RANGE_END_TAG]) == ("2026-11-18",
                                                                                                "2026-11-19")
    assert re.fullmatch(rf"{re.escape(topic)}:g0:(p\d+:\d+-\d+,?)+:2026-11-18\.\.2026-11-19", request.run_key)
    assert "case text" not in json.dumps(request.run_config)  # offsets only, never payloads

    cursor = IngestCursor.model_validate_json(tick.cursor)
    assert sum(cursor.next_offsets.values()) == 4
    assert [b.run_keys for b in cursor.pending] == [[request.run_key]]
    lag = tick.asset_events[0]
    assert lag.asset_key == RAW_EVENTS and lag.metadata["consumer_lag_total"].value == 0

    assert _execute(tick.run_requests, instance, resources) == [True]
    rows = resources["delta"].read(RAW_EVENTS)
    assert dict(rows.select("event_id", "event_date").iter_rows()) == {
        "a": "2026-11-18", "b": "2026-11-19", "c": "2026-11-18"}
    assert resources["delta"].read(REJECTED_EVENTS)["key"].to_list() == ["bad"]


def test_a_far_late_event_gets_its_own_run_and_a_batch_of_only_invalid_messages_a_dead_letter_run(
        kafka, resources, make_topic):
    topic = make_topic()
    wrong_types = json.dumps({**json.loads(_event("wt", "2026-09-01T10:00:00Z")[1]), "partner_id": 7}).encode()
    produce_sample_messages(kafka, topic, [_event("a", "2026-11-18T10:00:00Z"), _event("old", "2026-10-01T10:00:00Z"),
                                           (b"bad", b""), _event("b", "2026-11-19T10:00:00Z"), (b"wt", wrong_types)])
    instance, resources = dg.DagsterInstance.ephemeral(), _on(resources, topic)
    tick = _tick(resources, instance)
    by_target = {r.run_key.rsplit(":", 1)[1]: r for r in tick.run_requests}
    # The sensor makes the run's own decision: the wrong-types message of 2026-09-01 gets no run of its date.
    assert set(by_target) == {"2026-10-01", "2026-11-18..2026-11-19"}
    late, main = by_target["2026-10-01"], by_target["2026-11-18..2026-11-19"]
    # No dead letters there; the ingest domain alone holds no curated or enriched assets (see the test below).
    assert late.partition_key == "2026-10-01" and late.asset_selection == [RAW_EVENTS]
    assert late.run_config["ops"]["ingest_kafka_batch"]["config"]["ranges"] == [{"partition": 0, "start": 1, "end": 2}]
    assert set(main.asset_selection) == {RAW_EVENTS, REJECTED_EVENTS} and f"{topic}:g0:p0:0-5:" in main.run_key
    assert _execute(tick.run_requests, instance, resources) == [True, True]
    rows = resources["delta"].read(RAW_EVENTS)
    assert dict(rows.select("event_id", "event_date").iter_rows()) == {
        "a": "2026-11-18", "old": "2026-10-01", "b": "2026-11-19"}
    assert sorted(resources["delta"].read(REJECTED_EVENTS)["key"].to_list()) == ["bad", "wt"]
    checked = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(RAW_EVENTS, "raw_events_unique_event_id"), limit=10)
    evaluations = [r.event.dagster_event.event_specific_data for r in checked]
    assert {e.partition for e in evaluations if isinstance(e, dg.AssetCheckEvaluation)} == {
        "2026-10-01", "2026-11-18", "2026-11-19"}  # no valid event of 2026-09-01: nothing to check
    assert not instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_EVENTS, asset_partitions=["2026-09-01"]), limit=1).records

    produce_sample_messages(kafka, topic, [(b"x", b"{"), (b"y", None)])
    only_invalid = _tick(resources, instance, tick.cursor)
    [request] = only_invalid.run_requests
    assert request.job_name == "ingest_rejected_events_job" and request.run_key == f"{topic}:g0:p0:5-7:rejected"
    assert _execute([request], instance, resources) == [True]
    assert resources["delta"].count(REJECTED_EVENTS) == 4


def test_offsets_are_committed_to_the_group_only_after_the_runs_succeed(kafka, resources, make_topic, tmp_path):
    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event("a", "2026-11-18T10:00:00Z"), _event("b", "2026-10-01T10:00:00Z")])
    instance, resources = dg.DagsterInstance.ephemeral(), _on(resources, topic)
    first = _tick(resources, instance)
    assert len(first.run_requests) == 2  # far-apart dates: two runs of one batch
    assert kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: None}

    # One run fails (its Delta root is a file), one succeeds: nothing may be committed.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    broken = {**resources, "delta": DeltaLakeStorage(root=str(blocked))}
    assert _execute(first.run_requests[:1], instance, broken) == [False]
    assert _execute(first.run_requests[1:], instance, resources) == [True]
    second = _tick(resources, instance, first.cursor)
    assert "failed" in second.skip_message and first.run_requests[0].run_key in second.skip_message
    assert kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: None}

    # Re-executing the failed run (same tags) completes the batch: the next tick commits.
    assert _execute(first.run_requests[:1], instance, resources) == [True]
    third = _tick(resources, instance, second.cursor)
    assert third.run_requests == [] and "No new messages" in third.skip_message
    assert kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: 2}
    assert IngestCursor.model_validate_json(third.cursor).pending == []


def test_while_a_batch_run_is_queued_the_sensor_waits_and_then_takes_what_arrived_as_one_batch(
        kafka, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event("a", "2026-11-18T10:00:00Z")])
    instance, resources = dg.DagsterInstance.ephemeral(), _on(resources, topic)
    first = _tick(resources, instance)
    [request] = first.run_requests
    # The batch's run waits in the queue (the sensor's runs go one at a time); more events arrive meanwhile.
    queued = dg.DagsterRun(job_name=request.job_name, run_id="queued-run", status=dg.DagsterRunStatus.NOT_STARTED,
                           tags=request.tags)
    instance.add_run(queued)
    produce_sample_messages(kafka, topic, [_event("b", "2026-11-18T10:01:00Z")])
    produce_sample_messages(kafka, topic, [_event("c", "2026-11-18T10:02:00Z")])

    waiting = _tick(resources, instance, first.cursor)
    assert waiting.run_requests == [] and "waiting for 1 queued run(s)" in waiting.skip_message
    assert request.run_key in waiting.skip_message
    assert IngestCursor.model_validate_json(waiting.cursor).next_offsets == {0: 1}  # nothing read

    # Once it runs, the next batch is read and queued behind it: both events that arrived meanwhile,
    # one batch, one run. Nothing is committed until the first batch's run succeeded.
    instance.delete_run(queued.run_id)
    running = dg.DagsterRun(job_name=request.job_name, run_id="running-run", status=dg.DagsterRunStatus.STARTED,
                            tags=request.tags)
    instance.add_run(running)
    after = _tick(resources, instance, waiting.cursor)
    [batch] = after.run_requests
    assert batch.run_key == f"{topic}:g0:p0:1-3:2026-11-18"
    assert kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: None}

    instance.delete_run(running.run_id)  # ... the first run went through, then the second:
    assert _execute([request, batch], instance, resources) == [True, True]
    assert sorted(resources["delta"].read(RAW_EVENTS)["event_id"]) == ["a", "b", "c"]
    final = _tick(resources, instance, after.cursor)
    assert "No new messages" in final.skip_message
    assert kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: 3}  # both batches, in order


def test_sensor_resumes_from_its_cursor_after_a_restart_and_never_writes_a_message_twice(
        kafka, resources, make_topic):
    topic = make_topic(partitions=2)
    messages = generate_messages(60, days=2)
    produce_sample_messages(kafka, topic, messages)
    instance, resources = dg.DagsterInstance.ephemeral(), _on(resources, topic, max_messages=25)

    before = drain_topic(instance, resources, max_ticks=2)  # stops mid-topic
    assert before["skip_reason"] is None
    after = drain_topic(instance, resources, cursor=before["cursor"])  # a "restarted" daemon
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

    rows = resources["delta"].read(RAW_EVENTS)
    valid_ids = {m.key.decode() for m in messages if m.kind == "valid"}
    assert rows.height == len(valid_ids) and set(rows["event_id"]) == valid_ids
    assert resources["delta"].count(REJECTED_EVENTS) == sum(m.kind.startswith("malformed") for m in messages)
    final = IngestCursor.model_validate_json(after["cursor"])
    assert final.pending == [] and kafka.committed_offsets(CONSUMER_GROUP, topic, [0, 1]) == final.next_offsets


def test_sensor_skips_with_a_reason_when_nothing_is_new(resources, make_topic):
    tick = _tick(_on(resources, make_topic()), dg.DagsterInstance.ephemeral())
    assert tick.run_requests == [] and "No new messages on" in tick.skip_message


def test_sensor_skips_with_a_clear_reason_when_the_broker_is_unreachable(resources):
    down = {**resources, "kafka": KafkaResource(bootstrap_servers=f"127.0.0.1:{free_port()}"),
            "kafka_ingest": KafkaIngestSettings(connect_timeout_s=1)}
    cursor = IngestCursor(topic="events.raw", next_offsets={0: 42}).dump()
    tick = _tick(down, dg.DagsterInstance.ephemeral(), cursor)
    assert tick.run_requests == [] and "unreachable" in tick.skip_message
    assert tick.cursor == cursor


def test_sensor_skips_when_the_topic_does_not_exist(resources):
    tick = _tick(_on(resources, "no-such-topic-x1"), dg.DagsterInstance.ephemeral())
    assert "does not exist" in tick.skip_message


def test_recreated_topic_is_reported_and_read_from_its_earliest_offset(kafka, kafka_broker, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event(f"old-{i}", "2026-11-18T10:00:00Z") for i in range(5)])
    instance, resources = dg.DagsterInstance.ephemeral(), _on(resources, topic)
    cursor = drain_topic(instance, resources)["cursor"]

    delete_topic(kafka_broker, topic)
    create_topics(kafka_broker, {topic: 1})
    empty = _tick(resources, instance, cursor)
    assert "was recreated" in empty.skip_message and "earliest offset" in empty.skip_message
    assert IngestCursor.model_validate_json(empty.cursor).generation == 1

    produce_sample_messages(kafka, topic, [_event(f"new-{i}", "2026-11-18T10:00:00Z") for i in range(2)])
    summary = drain_topic(instance, resources, cursor=empty.cursor)
    assert [k.split(":")[1:3] for k in summary["run_keys"]] == [["g1", "p0"]]
    ids = set(resources["delta"].read(RAW_EVENTS)["event_id"])
    assert ids == {f"old-{i}" for i in range(5)} | {"new-0", "new-1"}


def test_cursor_beyond_the_log_end_is_reported_and_reset_to_the_earliest_offset(kafka, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event(f"e{i}", "2026-11-18T10:00:00Z") for i in range(3)])
    instance, resources = dg.DagsterInstance.ephemeral(), _on(resources, topic)
    stale = IngestCursor(topic=topic, topic_id=kafka.topic_id(topic), next_offsets={0: 100}).dump()
    tick = _tick(resources, instance, stale)
    assert "cursor beyond the log end" in tick.skip_message and "cursor 100, log ends at 3" in tick.skip_message
    recovered = IngestCursor.model_validate_json(tick.cursor)
    assert recovered.next_offsets == {} and recovered.generation == 1

    summary = drain_topic(instance, resources, cursor=tick.cursor)
    assert summary["run_keys"] == [f"{topic}:g1:p0:0-3:2026-11-18"]
    assert resources["delta"].count(RAW_EVENTS) == 3


def test_a_quiet_drain_runs_with_warning_console_logs(kafka, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event("a", "2026-11-18T10:00:00Z")])
    instance = dg.DagsterInstance.ephemeral()
    summary = drain_topic(instance, _on(resources, topic), quiet=True)
    assert summary["runs"] == {"ingest_events_job": 1, "ingest_rejected_events_job": 0}
    assert not summary["failed_run_keys"] and "No new messages" in summary["skip_reason"]
    [run] = instance.get_runs()
    assert run.run_config["loggers"] == QUIET_RUN_CONFIG["loggers"]
    assert run.run_config["ops"]["ingest_kafka_batch"]["config"]["topic"] == topic


def test_the_sensors_job_carries_a_batch_from_raw_to_enriched_in_one_in_process_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    from llm_assets.definitions import defs
    from llm_assets.ingest.assets import hot_path_executor

    job = defs.resolve_job_def("ingest_events_job")
    assert job.asset_layer.selected_asset_keys == {RAW_EVENTS, REJECTED_EVENTS, CURATED_CASES, ENRICHED_CASES}
    checked = {key.asset_key for key in job.asset_layer.asset_graph.asset_check_keys}
    assert {RAW_EVENTS, CURATED_CASES, ENRICHED_CASES} <= checked  # their blocking checks run in the same run
    assert job.executor_def is dg.in_process_executor
    assert hot_path_executor("prod") is None  # production keeps the code location's k8s_job_executor
    # The ingest domain alone (tests, the demo's emulation) holds the same job with its own assets only.
    alone = ingest_definitions({"kafka": KafkaResource(bootstrap_servers="127.0.0.1:1"),
                                "delta": DeltaLakeStorage(root=str(tmp_path / "delta"))})
    assert alone.resolve_job_def("ingest_events_job").asset_layer.selected_asset_keys == {RAW_EVENTS, REJECTED_EVENTS}
    assert kafka_events_sensor.minimum_interval_seconds == 10
    # A late date goes the whole hot path too (automation's lookback would not reach it), without dead letters.
    path = hot_path(dg.build_sensor_context(definitions=defs))
    assert set(path.assets) == {RAW_EVENTS, REJECTED_EVENTS, CURATED_CASES, ENRICHED_CASES}
    assert path.late()[0] == [RAW_EVENTS, CURATED_CASES, ENRICHED_CASES]
    # raw and curated checks are planned (they block enrichment in the run); enriched/cases's are
    # evaluated unplanned, so the UI never shows them "In Progress" while a micro-batch runs.
    assert {c.asset_key for c in path.checks} == {RAW_EVENTS, CURATED_CASES}
    assert {c.asset_key for c in path.late()[1]} == {RAW_EVENTS, CURATED_CASES}
    assert hot_path(dg.build_sensor_context(definitions=alone)).late()[0] == [RAW_EVENTS]


def test_a_batch_whose_run_failed_for_good_is_requested_again_with_backoff_then_fails_loudly(
        kafka, resources, make_topic, tmp_path):
    from llm_assets.sensors.kafka_events import ATTEMPT_TAG, RUN_KEY_TAG, BatchFailedError

    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event("a", "2026-11-18T10:00:00Z")])
    instance = dg.DagsterInstance.ephemeral()

    def settings(backoff_s: float) -> KafkaIngestSettings:
        return KafkaIngestSettings(topic=topic, time_budget_s=15, idle_timeout_s=0.5, max_batch_attempts=3,
                                   retry_backoff_s=backoff_s)

    resources = {**resources, "kafka_ingest": settings(3600)}
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    broken = {**resources, "delta": DeltaLakeStorage(root=str(blocked))}
    first = _tick(resources, instance)
    [request] = first.run_requests
    assert _execute([request], instance, broken) == [False]

    waiting = _tick(resources, instance, first.cursor)  # the backoff has not passed: nothing requested yet
    assert waiting.run_requests == [] and "requesting it again in" in waiting.skip_message

    soon = {**resources, "kafka_ingest": settings(0.0)}
    again = _tick(soon, instance, waiting.cursor)
    [repeat] = again.run_requests
    assert repeat.run_key == f"{request.run_key}#attempt2" and repeat.tags[RUN_KEY_TAG] == request.run_key
    assert repeat.tags[ATTEMPT_TAG] == "2" and repeat.tags[BATCH_TAG] == request.tags[BATCH_TAG]
    assert repeat.run_config == request.run_config and repeat.partition_key == request.partition_key
    assert _execute([repeat], instance, broken) == [False]
    third = _tick(soon, instance, again.cursor)
    [last] = third.run_requests
    assert last.run_key == f"{request.run_key}#attempt3"
    assert _execute([last], instance, broken) == [False]
    with pytest.raises(BatchFailedError, match="failed 3 times"):
        _tick(soon, instance, third.cursor)
    assert kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: None}

    # Fixed and re-executed by hand: the batch completes and the sensor goes on.
    assert _execute([last], instance, resources) == [True]
    done = _tick(soon, instance, third.cursor)
    assert done.run_requests == [] and kafka.committed_offsets(CONSUMER_GROUP, topic, [0]) == {0: 1}


def test_a_canceled_batch_run_is_requested_again_at_once(kafka, resources, make_topic):
    topic = make_topic()
    produce_sample_messages(kafka, topic, [_event("a", "2026-11-18T10:00:00Z")])
    instance = dg.DagsterInstance.ephemeral()
    resources = {**resources, "kafka_ingest": KafkaIngestSettings(topic=topic, time_budget_s=15, idle_timeout_s=0.5,
                                                                  retry_backoff_s=3600)}
    first = _tick(resources, instance)
    [request] = first.run_requests
    # The run was canceled (`make dev` stopped while it ran): no backoff, the batch is taken again.
    instance.add_run(dg.DagsterRun(job_name=request.job_name, run_id="canceled-run",
                                   status=dg.DagsterRunStatus.CANCELED, tags=request.tags,
                                   run_config=request.run_config))
    again = _tick(resources, instance, first.cursor)
    [repeat] = again.run_requests
    assert repeat.run_key == f"{request.run_key}#attempt2" and repeat.run_config == request.run_config
