"""`make dev` restarted (Ctrl-C during a micro-batch run, then again) while an outside producer keeps
publishing: the run in flight is recorded as canceled, not failed; every event the broker
acknowledged ends up once in raw/events, curated/cases and enriched/cases, and is published once,
and the Kafka sensor's first run after the restart comes by itself.

The real dev command (tansu, `milvus-lite server`, `dagster dev`, the rating page) runs on a
temporary home: it builds the seeds, the KB index and the gate and promotes the local model version
before its first micro-batch (so the first enriched rows carry all their versions). A plain
confluent-kafka producer (not the project's) sends an event every 0.25 s through both stops and
starts and records what the broker acknowledged. The dev broker keeps memory only: at Ctrl-C
`make dev` spools what no run has committed and produces it again at the next start
(`llm_assets/dev/broker.py`). The seconds from the restart to the first successful
sensor run are printed (`-s`) and written to `$LLM_ASSETS_TEST_ARTIFACTS/dev_restart.json`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import httpx
import polars as pl
import pytest
from confluent_kafka import Producer

from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, ENRICHED_OUTBOX, RAW_EVENTS
from llm_assets.dev.process import free_port
from llm_assets.resources.delta import DeltaLakeStorage
from tests.e2e.stack import RUNS_QUERY, wait_for
from tests.support.make_dev import dev_environment, start_dev

pytestmark = pytest.mark.e2e

TIMEOUT_S = 600  # KB index and gate are built by automation beside the sensor's runs on 2 shared cores


class OutsideProducer(threading.Thread):
    """An event every `interval_s`, keyed by event_id; `acked` holds what the broker acknowledged."""

    def __init__(self, bootstrap: str, interval_s: float = 0.25):
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 300_000,
                                  "log_level": 0})
        self.interval_s, self.acked, self.sent, self.stopping = interval_s, set(), 0, threading.Event()

    def _delivered(self, err, msg) -> None:
        if err is None:
            self.acked.add(msg.key().decode())

    def run(self) -> None:
        while not self.stopping.is_set():
            event_id = f"restart-{self.sent:05d}"
            event = {"event_id": event_id, "source_system": "ticketing", "partner_id": "P-002",
                     "event_ts": datetime.now(timezone.utc).isoformat(), "entity_id": f"ENT-{self.sent % 40:05d}",
                     "payload_raw": f"Ticket {event_id} was routed to the chargeback queue but concerns a refund"}
            self.producer.produce("events.raw", key=event_id.encode(), value=json.dumps(event).encode(),
                                  on_delivery=self._delivered)
            self.sent += 1
            self.producer.poll(0)  # serve delivery reports
            self.stopping.wait(self.interval_s)

    def finish(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self.is_alive():
            self.join()
        self.producer.flush(120)


def _ids(delta: DeltaLakeStorage, key) -> Counter:
    return Counter(i for i in delta.read(key)["event_id"].to_list() if i.startswith("restart-")) \
        if delta.exists(key) else Counter()


def _sensor_runs(ui: str) -> list[dict]:
    body = httpx.post(f"{ui}/graphql", timeout=30, json={
        "query": RUNS_QUERY, "variables": {"filter": {"tags": [{"key": "dagster/sensor_name",
                                                               "value": "kafka_events_sensor"}]}}}).json()
    return body["data"]["runsOrError"]["results"]


def _what_ended(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's last engine, step-failure and run-end messages: why it was not canceled."""
    kinds = {dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE,
             dg.DagsterEventType.RUN_CANCELING, dg.DagsterEventType.RUN_CANCELED}
    records = [r for r in instance.all_logs(run_id) if r.dagster_event and r.dagster_event.event_type in kinds]
    return [f"{r.dagster_event.event_type.value}: {(r.dagster_event.message or r.user_message)[:400]}"
            for r in records[-6:]]


def test_make_dev_restarted_while_an_outside_producer_publishes_keeps_every_acknowledged_event(tmp_path,
                                                                                               monkeypatch):
    ui_port, broker_port = free_port(), free_port()
    env = dev_environment(tmp_path / "home", tmp_path / "samples")
    delta = DeltaLakeStorage(root=str(tmp_path / "home" / "delta"))
    log = tmp_path / "dev.log"
    args = ("--port", str(ui_port), "--events", "20", "--interval", "3600", "--broker-port", str(broker_port))
    devs = [start_dev(env, log, *args)]  # every start is stopped at the end, whatever failed
    bootstrap = devs[0].bootstrap
    producer = OutsideProducer(bootstrap)
    try:
        producer.start()
        wait_for(lambda: len(_ids(delta, ENRICHED_CASES)) >= 10, TIMEOUT_S, "the first events enriched", 2)
        # make dev built the KB index and the gate and promoted the local version before the first batch.
        first_rows = delta.read(ENRICHED_CASES)
        assert first_rows["gate_version"].null_count() == 0 and "none" not in set(first_rows["kb_index_version"])
        assert all(mv.startswith("local-rules@v1+gate:") for mv in first_rows["model_version"])
        # Stop while a micro-batch run is running (and events are acknowledged but not yet ingested).
        running = wait_for(lambda: [r for r in _sensor_runs(devs[0].ui) if r["status"] == "STARTED"], TIMEOUT_S,
                           "a micro-batch run in flight", 0.3)
        devs[0].stop()
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster_home"))  # its dagster.yaml reads it
        with dg.DagsterInstance.get() as instance:
            stopped = {r["runId"]: instance.get_run_by_id(r["runId"]).status for r in running}
            why = {run_id: _what_ended(instance, run_id) for run_id, status in stopped.items()
                   if status not in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.SUCCESS)}
        # A run seen in flight either finished before Ctrl-C reached it or was canceled: never failed.
        stop_log = tmp_path / "home" / "dagster_home" / "dev-stop.log"
        assert not why, (stopped, why, stop_log.read_text() if stop_log.exists() else "no dev-stop.log")
        time.sleep(3)  # the producer keeps sending into the void: librdkafka holds and retries
        restarted_at = time.time()
        devs.append(start_dev(env, log, *args))
        assert devs[1].bootstrap == bootstrap
        first = wait_for(lambda: [r for r in _sensor_runs(devs[1].ui) if r["status"] == "SUCCESS"
                                  and (r["startTime"] or 0) >= restarted_at], TIMEOUT_S,
                         "the sensor's first run after the restart", 2)
        first_after_s = round(min(r["endTime"] for r in first) - restarted_at, 1)
        print(f"first micro-batch after the restart succeeded {first_after_s} s after the start", flush=True)
        time.sleep(5)
        producer.finish()

        acked = set(producer.acked)
        assert len(acked) >= 20, (len(acked), producer.sent)
        wait_for(lambda: acked <= set(_ids(delta, ENRICHED_CASES)), TIMEOUT_S, "every acknowledged event enriched",
                 2)
        published = lambda: Counter(i for i in delta.read(ENRICHED_OUTBOX).filter(  # noqa: E731
            pl.col("state") == "published")["event_id"].to_list() if i.startswith("restart-"))
        wait_for(lambda: acked <= set(published()), TIMEOUT_S, "every acknowledged event published", 2)
        for key in (RAW_EVENTS, CURATED_CASES, ENRICHED_CASES):
            counts = _ids(delta, key)
            assert set(counts) == acked and set(counts.values()) == {1}, (key, len(counts), len(acked))
        assert set(published().values()) == {1}, "a content version published twice"
    finally:
        producer.finish()
        for dev in devs:
            dev.stop()
    out = Path(os.environ.get("LLM_ASSETS_TEST_ARTIFACTS", "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "dev_restart.json").write_text(json.dumps({"first_micro_batch_after_restart_s": first_after_s,
                                                      "acknowledged_events": len(acked)}, indent=2))
