"""The code location under a real Dagster webserver and daemon, for end-to-end tests and benchmarks.

`DaemonStack` runs `dagster dev` (webserver, daemon, code server) in a session of its own on a
free port, with `DAGSTER_HOME` in a temporary folder holding the repository's `dagster.yaml`,
against a given Kafka broker and a `milvus-lite server` it starts. Everything the code
location reads comes from the environment it sets up (`LLM_ASSETS_HOME`, `KAFKA_*`,
`MILVUS_URI`), so the processes find the same Delta root, artifact store and topic as the
caller. It talks to the webserver through its GraphQL API only (plain HTTP POSTs).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from llm_assets import settings
from llm_assets.dev.broker import create_topics
from llm_assets.dev.dev_command import prepare_dagster_home, start_dagster_dev
from llm_assets.dev.milvus import MilvusServerHandle, start_milvus_server
from llm_assets.dev.process import ManagedProcess, free_port, stop_all

LOCATION = "llm_assets"
ANALYTICS_LOCATION = "llm_assets_analytics"  # the dbt models (workspace.yaml)
REPOSITORY = "__repository__"
# Each location's automation sensor, by location.
AUTOMATION_SENSORS = {LOCATION: "llm_assets_automation", ANALYTICS_LOCATION: "analytics_automation"}
TOPIC_PARTITIONS = 3
TERMINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
# SIGINT to a clean exit of `dagster dev` (webserver, daemon, code server): about 6 s here, more under load.
SHUTDOWN_GRACE_S = 45.0

RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName tags { key value } startTime endTime } }
    ... on PythonError { message }
  }
}"""

MATERIALIZATIONS_QUERY = """
query Materializations($key: AssetKeyInput!, $limit: Int) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations(limit: $limit) {
      runId partition timestamp metadataEntries { label ... on IntMetadataEntry { intValue }
        ... on FloatMetadataEntry { floatValue } } } }
  }
}"""


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 1.0):
    """Poll `condition` until it returns something truthy (returned), else fail saying `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


class UIClient:
    """The webserver's GraphQL API, as a user's script would drive it (plain HTTP POSTs)."""

    def __init__(self, url: str):
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                              timeout=30)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    @staticmethod
    def _sensor_selector(name: str, location: str) -> dict:
        return {"repositoryLocationName": location, "repositoryName": REPOSITORY, "sensorName": name}

    def sensor(self, name: str, location: str = LOCATION) -> dict:
        data = self.graphql("""
            query Sensor($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
              __typename ... on Sensor { id name sensorState { id status } } } }""",
                            {"selector": self._sensor_selector(name, location)})["sensorOrError"]
        if data["__typename"] != "Sensor":
            raise KeyError(f"sensor {name}: {data['__typename']}")
        return data

    def stop_sensor(self, name: str, location: str = LOCATION) -> None:
        state_id = self.sensor(name, location)["sensorState"]["id"]
        data = self.graphql("""mutation Stop($id: String) { stopSensor(id: $id) { __typename
              ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }""",
                            {"id": state_id})["stopSensor"]
        assert data["__typename"] == "StopSensorMutationResult", data

    def start_sensor(self, name: str, location: str = LOCATION) -> None:
        data = self.graphql("""mutation Start($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
              __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
                            {"selector": self._sensor_selector(name, location)})["startSensor"]
        assert data["__typename"] == "Sensor" and data["sensorState"]["status"] == "RUNNING", data

    def stop_automation(self, timeout_s: float = 120.0) -> None:
        """Stop the automation sensor of each code location (the analytics location may still be loading)."""
        for location, name in AUTOMATION_SENSORS.items():
            def loaded(name=name, location=location):
                try:
                    return self.sensor(name, location)
                except (httpx.HTTPError, KeyError):
                    return None

            if wait_for(loaded, timeout_s, f"{location} loaded")["sensorState"]["status"] == "RUNNING":
                self.stop_sensor(name, location)

    def ticks(self, name: str, limit: int = 100) -> list[dict]:
        """The sensor's ticks, newest first: `timestamp`, `status`, `runIds`, `requestedAssetMaterializationCount`."""
        data = self.graphql("""query Ticks($selector: SensorSelector!, $limit: Int) {
              sensorOrError(sensorSelector: $selector) { __typename ... on Sensor { sensorState {
                ticks(limit: $limit) { timestamp status runIds requestedAssetMaterializationCount } } } } }""",
                            {"selector": self._sensor_selector(name, LOCATION), "limit": limit})["sensorOrError"]
        if data["__typename"] != "Sensor":
            raise KeyError(f"sensor {name}: {data['__typename']}")
        return data["sensorState"]["ticks"]

    def launch_assets(self, keys: Iterable[str], *, partition: str | None = None,
                      run_config: dict | None = None) -> str:
        """Launch one run of the asset keys (user strings, with their checks) through the queue, of one
        partition when given; returns the run id."""
        params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                               "jobName": "__ASSET_JOB", "assetSelection": [{"path": k.split("/")} for k in keys]},
                  "runConfigData": run_config or {}, "mode": "default"}
        if partition is not None:
            params["executionMetadata"] = {"tags": [{"key": "dagster/partition", "value": partition}]}
        data = self.graphql("""mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
              __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
              ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }""",
                            {"params": params})["launchRun"]
        assert data["__typename"] == "LaunchRunSuccess", data
        return data["run"]["runId"]

    def runs(self, tags: dict[str, str] | None = None, run_ids: list[str] | None = None) -> list[dict]:
        run_filter: dict = {}
        if tags:
            run_filter["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        if run_ids:
            run_filter["runIds"] = run_ids
        data = self.graphql(RUNS_QUERY, {"filter": run_filter})["runsOrError"]
        assert data["__typename"] == "Runs", data
        return data["results"]

    def wait_for_run(self, run_id: str, timeout_s: float) -> dict:
        def finished():
            [run] = self.runs(run_ids=[run_id])
            return run if run["status"] in TERMINAL_STATUSES else None
        return wait_for(finished, timeout_s, f"run {run_id}")

    def failure(self, run_id: str) -> list[str]:
        """The step failures and run failure messages of a run (for assertion messages)."""
        data = self.graphql("""query Failure($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run {
              eventConnection(afterCursor: null) { events { __typename
                ... on ExecutionStepFailureEvent { stepKey error { message } }
                ... on RunFailureEvent { message } } } } } }""", {"runId": run_id})["runOrError"]
        events = data.get("eventConnection", {}).get("events", [])
        return [f"{e.get('stepKey') or 'run'}: {(e.get('error') or {}).get('message') or e.get('message')}"
                for e in events if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")]

    def materializations(self, key: str, limit: int = 1000) -> list[dict]:
        data = self.graphql(MATERIALIZATIONS_QUERY, {"key": {"path": key.split("/")}, "limit": limit})["assetOrError"]
        return data.get("assetMaterializations", []) if data["__typename"] == "Asset" else []


class DaemonStack(UIClient):
    """`dagster dev` + `milvus-lite server` over a temporary `LLM_ASSETS_HOME` (see the module docstring)."""

    def __init__(self, home: Path, bootstrap: str, events_topic: str, extra_env: dict[str, str] | None = None):
        self.home, self.bootstrap, self.events_topic = Path(home), bootstrap, events_topic
        self.port = free_port()
        self.dagster: ManagedProcess | None = None
        self.milvus: MilvusServerHandle | None = None
        self.env = {
            "LLM_ASSETS_HOME": str(self.home), "DAGSTER_HOME": str(self.home / "dagster_home"),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_EVENTS_TOPIC": events_topic, "LLM_ASSETS_ENV": "local",
            **(extra_env or {}),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self, env: pytest.MonkeyPatch) -> None:
        """Topics, the Milvus server and `DAGSTER_HOME`; `env` sets this process's variables (and so
        those of `dagster dev`) and restores them when undone."""
        for name, value in self.env.items():
            env.setenv(name, value)
        for name in ("DELTA_ROOT", "MILVUS_URI", "ARTIFACT_ROOT", "SAMPLE_DATA_DIR", "LLM_BASE_URL", "LLM_BACKEND"):
            env.delenv(name, raising=False)  # the defaults under LLM_ASSETS_HOME, the local LLM backend
        create_topics(self.bootstrap, {self.events_topic: TOPIC_PARTITIONS, settings.ENRICHED_TOPIC: TOPIC_PARTITIONS})
        self.milvus = start_milvus_server(self.home / "milvus_server")
        env.setenv("MILVUS_URI", self.milvus.uri)
        prepare_dagster_home()

    def start(self, timeout_s: float = 180.0) -> None:
        """Start `dagster dev` and wait until the code location answers."""
        self.dagster, log_path = start_dagster_dev(self.port, Path(os.environ["DAGSTER_HOME"]))
        self.log_path = log_path

        def loaded():
            if not self.dagster.is_running():
                raise RuntimeError(f"dagster dev exited:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                return self.sensor("kafka_events_sensor")
            except (httpx.HTTPError, KeyError, TypeError):
                return None

        wait_for(loaded, timeout_s, f"dagster dev on {self.url} (log {log_path})")

    def stop(self) -> list[str]:
        """SIGINT to `dagster dev` and all it started; returns the names that needed SIGKILL."""
        if self.dagster is None:
            return []
        killed = stop_all([self.dagster], SHUTDOWN_GRACE_S)
        return killed

    def close(self) -> None:
        processes = [p for p in (self.dagster, self.milvus.process if self.milvus else None) if p is not None]
        stop_all(processes, 10.0)

# Kafka as an outside client sees it

def produce(bootstrap: str, topic: str, events: list[dict]) -> float:
    """Produce `events` (key = event_id, value = JSON) with a plain idempotent producer; returns the time sent."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    sent_at = time.time()
    for event in events:
        producer.produce(topic, key=event["event_id"].encode(), value=json.dumps(event).encode())
    assert producer.flush(30) == 0, "messages left unsent"
    return sent_at


def consume_all(bootstrap: str, topic: str, partitions: int = TOPIC_PARTITIONS, idle_s: float = 3.0) -> list[dict]:
    """Every message of `topic` from the beginning (values as JSON), read until `idle_s` without one."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-reader-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])  # OFFSET 0: from the beginning
    values, idle_since = [], time.monotonic()
    try:
        while time.monotonic() - idle_since < idle_s:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is None:
                    values.append(json.loads(message.value()))
                    idle_since = time.monotonic()
    finally:
        consumer.close()
    return values
