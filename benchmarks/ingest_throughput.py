"""Kafka -> `raw/events` throughput against a raw confluent-kafka batch consume of the same topic.

Starts a local tansu broker and, for each scenario, produces the sample events (`n_events`
distinct events plus the generator's duplicates and malformed messages; produced chunk by
chunk, so this process never holds them all) to a fresh topic, then times:

1. the baseline: a raw `consume(num_messages=...)` loop of the whole topic that stops at the
   known end offsets (messages touched, nothing else), with the same consumer settings and
   batch size as the ingest's reads;
2. the real ingest: `kafka_events_sensor` ticks + in-process runs (`drain_topic`) until the
   topic is drained into `raw/events` and `raw/rejected_events` on a temporary Delta root,
   checked for lost or duplicated rows.

Scenarios: `sample order` (three days interleaved message by message, so every batch touches
all three dates) and `event-time order` (each chunk of the stream one day later, sorted by
`event_ts`, as a live stream arrives: a batch touches one or two dates). Prints both
throughputs, their ratio (goal >= 0.5), where the ingest's time went (sensor ticks; runs:
read and validate, write; the rest: checks and Dagster) and the peak RSS (goal <= 1.5 GB).
Each scenario is measured `repeats` times and the median ratio is reported, after one untimed
warm-up drain (imports, first run). The machine is shared: single runs vary by +-20%.
Run: `.venv/bin/python -W ignore benchmarks/ingest_throughput.py [n_events] [partitions] [repeats]`.
"""

from __future__ import annotations

import logging
import resource
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

import dagster as dg
from confluent_kafka import KafkaError, TopicPartition

from llm_assets.asset_keys import RAW_EVENTS, REJECTED_EVENTS
from llm_assets.dev.broker import create_topics, start_broker
from llm_assets.dev.daemon import drain_topic
from llm_assets.dev.samples import produce_sample_messages
from llm_assets.ingest.contract import validate_values
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaIngestSettings, KafkaResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import SampleMessage, generate_messages
from llm_assets.sensors.kafka_events import READ_CHUNK

CHUNK_EVENTS = 100_000  # events generated and produced at a time
GOAL_RATIO = 0.5
GOAL_RSS_MIB = 1536


def sample_chunks(n_events: int, event_time_order: bool) -> Iterator[list[SampleMessage]]:
    """The scenario's messages, chunk by chunk (distinct ids across chunks)."""
    for k, first in enumerate(range(0, n_events, CHUNK_EVENTS)):
        size = min(CHUNK_EVENTS, n_events - first)
        if not event_time_order:
            yield generate_messages(size, seed=k, id_prefix=f"evt-c{k:03d}-")
            continue
        messages = generate_messages(size, seed=k, start_date=date(2026, 11, 1) + timedelta(days=k), days=1,
                                     id_prefix=f"evt-c{k:03d}-")
        yield event_time_sorted(messages)


def event_time_sorted(messages: list[SampleMessage]) -> list[SampleMessage]:
    """Stable sort by UTC event time; an invalid message keeps the time of the one before it."""
    checked = validate_values([m.value for m in messages])
    ts_by_index = dict(zip(checked.events["position"].to_list(), checked.events["event_ts"].to_list()))
    keyed, last = [], None
    for i, m in enumerate(messages):
        last = ts_by_index.get(i, last)
        keyed.append((last.isoformat() if last else "", i))
    return [messages[i] for _, i in sorted(keyed)]


def raw_consume(kafka: KafkaResource, topic: str, partitions: int, expected: int) -> float:
    """Seconds to consume the whole topic with plain `consume(num_messages=...)` calls that ask for
    no more than is left and stop at the last message (the end offsets are known)."""
    consumer = kafka.consumer()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen, size = 0, 0
    started = time.perf_counter()
    while seen < expected:
        for msg in consumer.consume(num_messages=min(READ_CHUNK, expected - seen), timeout=0.5):
            if msg.error() is None:
                seen += 1
                size += len(msg.value() or b"")
            elif msg.error().code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(msg.error().str())
    elapsed = time.perf_counter() - started
    consumer.close()
    assert seen == expected, (seen, expected)
    return elapsed


def drain(kafka: KafkaResource, topic: str) -> tuple[float, dict, dg.DagsterInstance, int, int]:
    """Seconds to drain the topic into a fresh Delta root (fresh instance and cursor), and the counts."""
    with tempfile.TemporaryDirectory() as tmp:
        delta = DeltaLakeStorage(root=str(Path(tmp) / "delta"))
        instance = dg.DagsterInstance.ephemeral()
        resources = {"kafka": kafka, "delta": delta, "kafka_ingest": KafkaIngestSettings(topic=topic)}
        started = time.perf_counter()
        summary = drain_topic(instance, resources, quiet=True)
        drain_s = time.perf_counter() - started
        return drain_s, summary, instance, delta.count(RAW_EVENTS), delta.count(REJECTED_EVENTS)


def time_split(summary: dict, instance: dg.DagsterInstance) -> str:
    """Where the drain's time went, from its summary and the runs' materialization metadata."""
    read = write = 0.0
    seen_runs = set()
    for record in instance.fetch_materializations(RAW_EVENTS, limit=10_000).records:
        if record.run_id in seen_runs:
            continue  # a range run reports the same figures for each of its dates
        seen_runs.add(record.run_id)
        metadata = record.asset_materialization.metadata
        read += metadata["read_seconds"].value
        write += metadata["write_seconds"].value
    other = summary["run_seconds"] - read - write
    return (f"sensor ticks {summary['tick_seconds']:.1f}s; runs {summary['run_seconds']:.1f}s = read+validate "
            f"{read:.1f}s + write raw/events {write:.1f}s + dead letter, checks and Dagster {other:.1f}s")


def scenario(name: str, bootstrap: str, n_events: int, partitions: int, repeats: int) -> float:
    topic = f"events.raw.bench.{name.replace(' ', '-')}"
    create_topics(bootstrap, {topic: partitions})
    kafka = KafkaResource(bootstrap_servers=bootstrap)
    started = time.perf_counter()
    produced = distinct_valid = malformed = 0
    for chunk in sample_chunks(n_events, event_time_order=name == "event-time order"):
        produced += produce_sample_messages(kafka, topic, chunk)
        distinct_valid += sum(m.kind == "valid" for m in chunk)
        malformed += sum(m.kind.startswith("malformed") for m in chunk)
    produce_s = time.perf_counter() - started
    print(f"[{name}] produced {produced:,} messages ({distinct_valid:,} distinct valid, {malformed:,} malformed) "
          f"to {partitions} partitions in {produce_s:.1f}s: {produced / produce_s:,.0f} msg/s")

    ratios = []
    for attempt in range(1, repeats + 1):
        raw_s = raw_consume(kafka, topic, partitions, produced)
        drain_s, summary, instance, rows, rejected = drain(kafka, topic)
        ratios.append(raw_s / drain_s)
        print(f"[{name}] #{attempt}: raw consume {raw_s:.2f}s ({produced / raw_s:,.0f} msg/s), kafka -> raw/events "
              f"{drain_s:.2f}s ({produced / drain_s:,.0f} msg/s; {summary['ticks']} ticks, runs "
              f"{summary['runs']}): ratio {ratios[-1]:.3f}")
        print(f"[{name}] #{attempt}: {time_split(summary, instance)}")
        if rows != distinct_valid or rejected != malformed or summary["failed_run_keys"]:
            raise SystemExit(f"ingest lost or duplicated rows: raw/events {rows} (expected {distinct_valid}), "
                             f"raw/rejected_events {rejected} (expected {malformed}), "
                             f"failed runs {summary['failed_run_keys']}")
    ratio = statistics.median(ratios)
    print(f"[{name}] raw/events rows {rows:,} (expected {distinct_valid:,}), raw/rejected_events rows {rejected:,} "
          f"(expected {malformed:,})")
    print(f"[{name}] ratio ingest/raw consume, median of {repeats}: {ratio:.3f} (goal >= {GOAL_RATIO})")
    return ratio


def warm_up(bootstrap: str, partitions: int) -> None:
    """Drain 1,000 messages once, untimed: imports and first-run setup are a daemon's, not a batch's, cost."""
    topic = "events.raw.bench.warm-up"
    create_topics(bootstrap, {topic: partitions})
    kafka = KafkaResource(bootstrap_servers=bootstrap)
    produce_sample_messages(kafka, topic, generate_messages(1_000, seed=1))
    drain(kafka, topic)


def main(n_events: int = 1_000_000, partitions: int = 3, repeats: int = 1) -> None:
    logging.getLogger("dagster").setLevel(logging.WARNING)  # per-step logs would dominate the output
    broker = start_broker()
    try:
        warm_up(broker.bootstrap, partitions)
        ratios = [scenario(name, broker.bootstrap, n_events, partitions, repeats)
                  for name in ("sample order", "event-time order")]
    finally:
        broker.stop()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ratio ingest/raw consume: {', '.join(f'{r:.3f}' for r in ratios)} (goal >= {GOAL_RATIO}); "
          f"peak RSS of this process (the ingest; the broker is its own): {peak_mib:,.0f} MiB "
          f"(goal <= {GOAL_RSS_MIB:,} MiB)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
