"""Kafka -> `raw/events` throughput against a plain confluent-kafka consume of the same topic.

Starts a local tansu broker and, for each scenario, produces the sample events (100k
distinct events plus the generator's duplicates and malformed messages) to a fresh topic,
then times:

1. a raw consume of the whole topic (`assign()` + `consume()`, values touched, nothing else);
2. the real ingest: `kafka_events_sensor` ticks + in-process runs (`drain_topic`) until the
   topic is drained into `raw/events` and `raw/rejected_events` on a temporary Delta root.

Scenarios: `sample order` (the generator's order: three days interleaved message by
message, so a batch touches all three dates) and `event-time order` (the same messages in
`event_ts` order, as a live stream arrives: a batch touches one or two dates). Either way a
batch is one run that reads its offsets once. Prints both throughputs, their ratio (goal
>= 0.25) and the peak RSS.
Run: `.venv/bin/python benchmarks/ingest_throughput.py [n_events] [partitions]`.
"""

from __future__ import annotations

import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
from confluent_kafka import KafkaError, TopicPartition

from llm_assets.ingest.contract import validate_values
from llm_assets.ingest.local_runner import drain_topic, produce_sample_messages
from llm_assets.local_broker import create_topics, start_broker
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource
from llm_assets.sample_data.generator import SampleMessage, generate_messages
from llm_assets.sensors.kafka_events import KafkaSensorSettings, build_kafka_events_sensor


def raw_consume(kafka: KafkaResource, topic: str, partitions: int, expected: int) -> float:
    consumer = kafka.consumer()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen, size, at_end = 0, 0, set()
    started = time.perf_counter()
    while seen < expected or len(at_end) < partitions:
        for msg in consumer.consume(num_messages=10_000, timeout=0.5):
            if msg.error() is None:
                seen += 1
                size += len(msg.value() or b"")
                at_end.discard(msg.partition())
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
    elapsed = time.perf_counter() - started
    consumer.close()
    assert seen == expected, (seen, expected)
    return elapsed


def event_time_order(messages: list[SampleMessage]) -> list[SampleMessage]:
    """Stable sort by UTC event time; an invalid message keeps the time of the one before it."""
    checked = validate_values([m.value for m in messages])
    ts_by_index = dict(zip(checked.events["position"].to_list(), checked.events["event_ts"].to_list()))
    keyed, last = [], None
    for i, m in enumerate(messages):
        last = ts_by_index.get(i, last)
        keyed.append((last.isoformat() if last else "", m))
    return [m for _, m in sorted(keyed, key=lambda pair: pair[0])]


def scenario(name: str, bootstrap: str, messages: list[SampleMessage], partitions: int) -> float:
    distinct_valid = sum(m.kind == "valid" for m in messages)
    malformed = sum(m.kind.startswith("malformed") for m in messages)
    topic = f"events.raw.bench.{name.replace(' ', '-')}"
    create_topics(bootstrap, {topic: partitions})
    kafka = KafkaResource(bootstrap_servers=bootstrap)
    started = time.perf_counter()
    produce_sample_messages(kafka, topic, messages)
    produce_s = time.perf_counter() - started
    print(f"[{name}] produced {len(messages)} messages ({distinct_valid} distinct valid, {malformed} malformed) "
          f"to {partitions} partitions in {produce_s:.2f}s: {len(messages) / produce_s:,.0f} msg/s")

    raw_s = raw_consume(kafka, topic, partitions, len(messages))
    raw_tput = len(messages) / raw_s
    print(f"[{name}] raw confluent-kafka consume: {raw_s:.2f}s, {raw_tput:,.0f} msg/s")

    with tempfile.TemporaryDirectory() as tmp:
        delta = DeltaLakeStorage(root=str(Path(tmp) / "delta"))
        sensor = build_kafka_events_sensor(KafkaSensorSettings(topic=topic), name="bench_kafka_events_sensor")
        started = time.perf_counter()
        summary = drain_topic(dg.DagsterInstance.ephemeral(), {"kafka": kafka, "delta": delta}, sensor=sensor,
                              quiet=True)
        drain_s = time.perf_counter() - started
        rows, rejected = delta.count("raw/events"), delta.count("raw/rejected_events")
    drain_tput = len(messages) / drain_s
    print(f"[{name}] kafka -> raw/events (sensor + runs, drain): {drain_s:.2f}s, {drain_tput:,.0f} msg/s; "
          f"{summary['ticks']} ticks, runs {summary['runs']}, failed {len(summary['failed_run_keys'])}")
    print(f"[{name}] raw/events rows {rows} (expected {distinct_valid}), "
          f"raw/rejected_events rows {rejected} (expected {malformed})")
    print(f"[{name}] ratio ingest/raw consume: {drain_tput / raw_tput:.3f} (goal >= 0.25)")
    if rows != distinct_valid or rejected != malformed or summary["failed_run_keys"]:
        raise SystemExit("ingest lost or duplicated rows")
    return drain_tput / raw_tput


def main(n_events: int = 100_000, partitions: int = 3) -> None:
    logging.getLogger("dagster").setLevel(logging.WARNING)  # per-step logs would dominate the output
    messages = generate_messages(n_events)
    broker = start_broker()
    try:
        scenario("sample order", broker.bootstrap, messages, partitions)
        scenario("event-time order", broker.bootstrap, event_time_order(messages), partitions)
    finally:
        broker.stop()
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
