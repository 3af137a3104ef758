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
Each scenario is measured `repeats` times (raw consume, then drain into a fresh Delta root
with a fresh instance and cursor) and the median ratio is reported, after one untimed
warm-up drain (imports, first run). The machine is shared, so single runs vary by +-20%.
Run: `.venv/bin/python -W ignore benchmarks/ingest_throughput.py [n_events] [partitions] [repeats]`.
"""

from __future__ import annotations

import logging
import resource
import statistics
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
from llm_assets.asset_keys import RAW_EVENTS, REJECTED_EVENTS


def raw_consume(kafka: KafkaResource, topic: str, partitions: int, expected: int, tight: bool = False) -> float:
    """Seconds to consume the whole topic with a plain `consume(10_000, timeout=0.5)` loop.

    That loop ends with a call that waits for messages that never come (up to 0.5 s) and
    for the end-of-partition events. `tight=True` asks for no more messages than are left
    and stops at the last one: the transfer alone, reported so the ratio can be read both ways.
    """
    consumer = kafka.consumer()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen, size, at_end = 0, 0, set()
    started = time.perf_counter()
    while seen < expected or (len(at_end) < partitions and not tight):
        wanted = min(10_000, expected - seen) if tight else 10_000
        for msg in consumer.consume(num_messages=wanted, timeout=0.5):
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


def drain(kafka: KafkaResource, topic: str) -> tuple[float, dict, int, int]:
    """Seconds to drain the topic into a fresh Delta root (fresh instance and cursor), and the counts."""
    with tempfile.TemporaryDirectory() as tmp:
        delta = DeltaLakeStorage(root=str(Path(tmp) / "delta"))
        sensor = build_kafka_events_sensor(KafkaSensorSettings(topic=topic), name="bench_kafka_events_sensor")
        started = time.perf_counter()
        summary = drain_topic(dg.DagsterInstance.ephemeral(), {"kafka": kafka, "delta": delta}, sensor=sensor,
                              quiet=True)
        drain_s = time.perf_counter() - started
        return drain_s, summary, delta.count(RAW_EVENTS), delta.count(REJECTED_EVENTS)


def scenario(name: str, bootstrap: str, messages: list[SampleMessage], partitions: int, repeats: int) -> float:
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

    ratios, tail_free = [], []
    for attempt in range(1, repeats + 1):
        raw_s = raw_consume(kafka, topic, partitions, len(messages))
        tight_s = raw_consume(kafka, topic, partitions, len(messages), tight=True)
        drain_s, summary, rows, rejected = drain(kafka, topic)
        ratios.append(raw_s / drain_s)
        tail_free.append(tight_s / drain_s)
        print(f"[{name}] #{attempt}: raw consume {raw_s:.2f}s ({len(messages) / raw_s:,.0f} msg/s; without the "
              f"final wait {tight_s:.2f}s), kafka -> raw/events drain {drain_s:.2f}s "
              f"({len(messages) / drain_s:,.0f} msg/s; {summary['ticks']} ticks, runs {summary['runs']}): "
              f"ratio {ratios[-1]:.3f}")
        if rows != distinct_valid or rejected != malformed or summary["failed_run_keys"]:
            raise SystemExit(f"ingest lost or duplicated rows: raw/events {rows} (expected {distinct_valid}), "
                             f"raw/rejected_events {rejected} (expected {malformed}), "
                             f"failed runs {summary['failed_run_keys']}")
    ratio = statistics.median(ratios)
    print(f"[{name}] raw/events rows {rows} (expected {distinct_valid}), raw/rejected_events rows {rejected} "
          f"(expected {malformed})")
    print(f"[{name}] ratio ingest/raw consume, median of {repeats}: {ratio:.3f} (goal >= 0.25); "
          f"against the raw consume without its final wait: {statistics.median(tail_free):.3f}")
    return ratio


def warm_up(bootstrap: str, partitions: int) -> None:
    """Drain 1,000 messages once, untimed: imports and first-run setup are a daemon's, not a batch's, cost."""
    topic = "events.raw.bench.warm-up"
    create_topics(bootstrap, {topic: partitions})
    kafka = KafkaResource(bootstrap_servers=bootstrap)
    produce_sample_messages(kafka, topic, generate_messages(1_000, seed=1))
    raw_consume(kafka, topic, partitions, len(generate_messages(1_000, seed=1)), tight=True)
    drain(kafka, topic)


def main(n_events: int = 100_000, partitions: int = 3, repeats: int = 3) -> None:
    logging.getLogger("dagster").setLevel(logging.WARNING)  # per-step logs would dominate the output
    messages = generate_messages(n_events)
    broker = start_broker()
    try:
        warm_up(broker.bootstrap, partitions)
        scenario("sample order", broker.bootstrap, messages, partitions, repeats)
        scenario("event-time order", broker.bootstrap, event_time_order(messages), partitions, repeats)
    finally:
        broker.stop()
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
