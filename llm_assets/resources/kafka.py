"""`KafkaResource`: the one Kafka client of llm-assets (ingest reads, offset commits, publishing).

Reads never join a consumer group: a consumer is `assign()`ed explicit offsets, so a sensor
tick or a run costs no rebalance and re-reads exactly the range it was given. The group
(`CONSUMER_GROUP`) only receives commits, for lag dashboards. Producers are always
idempotent (`enable.idempotence` is off by default in librdkafka).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import dagster as dg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import Field

_log = logging.getLogger("llm_assets.kafka")


class KafkaUnavailableError(RuntimeError):
    """The broker did not answer within the request timeout."""


class TopicNotFoundError(LookupError):
    """The topic does not exist on the broker."""


class OffsetRangeUnavailableError(RuntimeError):
    """A requested offset range is no longer (or not yet) in the log."""


class KafkaDeliveryError(RuntimeError):
    """At least one produced message was not acknowledged by the broker."""


class KafkaRecord(NamedTuple):
    """One consumed message, detached from librdkafka (a tuple: cheap to build by the 100k)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class RecordColumns(NamedTuple):
    """A chunk of consumed messages as parallel lists (what a bulk validator wants)."""

    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]


@dataclass(frozen=True)
class OffsetRange:
    """Offsets `start` (inclusive) to `end` (exclusive) of one partition."""

    partition: int
    start: int
    end: int


class KafkaResource(dg.ConfigurableResource):
    """Kafka at `bootstrap_servers`; `client_config` (security.protocol, sasl.*, ssl.*) goes to every client."""

    bootstrap_servers: str = Field(description="KAFKA_BOOTSTRAP_SERVERS, e.g. 127.0.0.1:9092")
    client_config: dict[str, str] = Field(default_factory=dict,
                                          description="extra librdkafka settings (security, SASL, TLS)")
    request_timeout_s: float = Field(default=5.0, description="how long a metadata or fetch call may wait")

    # -- clients ---------------------------------------------------------------------------
    def client_settings(self, **overrides: object) -> dict[str, object]:
        settings: dict[str, object] = {"bootstrap.servers": self.bootstrap_servers, "logger": _log,
                                       "socket.timeout.ms": int(self.request_timeout_s * 1000)}
        settings.update(self.client_config)
        settings.update(overrides)
        return settings

    def consumer(self, group_id: str = "llm-assets-reader", **overrides: object) -> Consumer:
        """A consumer for `assign()` + explicit offsets: no auto commit, no topic auto-creation."""
        return Consumer(self.client_settings(**{
            "group.id": group_id, "enable.auto.commit": False, "enable.auto.offset.store": False,
            "enable.partition.eof": True, "auto.offset.reset": "error", "allow.auto.create.topics": False,
            "fetch.wait.max.ms": 100, **overrides}))

    def producer_settings(self, **overrides: object) -> dict[str, object]:
        """Producer settings; `enable.idempotence` is forced on whatever the config says."""
        settings = self.client_settings(**{"linger.ms": 5, **overrides})
        settings["enable.idempotence"] = True
        return settings

    def producer(self, **overrides: object) -> Producer:
        """An idempotent producer (never duplicates or reorders on retry)."""
        return Producer(self.producer_settings(**overrides))

    def admin(self) -> AdminClient:
        return AdminClient(self.client_settings())

    # -- metadata --------------------------------------------------------------------------
    def topic_partitions(self, topic: str, timeout_s: float | None = None) -> list[int]:
        """The partition ids of `topic`; raises `KafkaUnavailableError` or `TopicNotFoundError`."""
        timeout_s = timeout_s or self.request_timeout_s
        try:
            # Listing every topic (not `topic=`) so the metadata call never auto-creates it.
            metadata = self.admin().list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"Kafka broker at {self.bootstrap_servers} unreachable "
                f"(no answer within {timeout_s:g}s): {exc.args[0].str()}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist on {self.bootstrap_servers}")
        return sorted(found.partitions)

    def topic_id(self, topic: str, timeout_s: float | None = None) -> str | None:
        """The broker's id of this incarnation of `topic` (changes when it is deleted and recreated)."""
        admin = self.admin()  # keep a reference: the future fails if the client is collected first
        try:
            futures = admin.describe_topics(TopicCollection([topic]),
                                            request_timeout=timeout_s or self.request_timeout_s)
            return str(futures[topic].result().topic_id)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicNotFoundError(f"topic {topic!r} does not exist on {self.bootstrap_servers}") from exc
            raise KafkaUnavailableError(f"Kafka broker at {self.bootstrap_servers}: {exc.args[0].str()}") from exc

    # -- reading ---------------------------------------------------------------------------
    def _iter_range_messages(self, topic: str, ranges: Iterable[OffsetRange | tuple[int, int, int]],
                             batch_size: int) -> Iterator[list[Message]]:
        """The messages of the given offset ranges (librdkafka objects), in lists of at most `batch_size`."""
        wanted: dict[int, OffsetRange] = {}
        for r in (x if isinstance(x, OffsetRange) else OffsetRange(*x) for x in ranges):
            if r.partition in wanted:
                raise ValueError(f"two ranges for {topic}[{r.partition}]: merge them into one")
            if r.end > r.start:
                wanted[r.partition] = r
        if not wanted:
            return
        consumer = self.consumer()
        try:
            consumer.assign([TopicPartition(topic, p, r.start) for p, r in wanted.items()])
            remaining = set(wanted)
            position = {p: r.start for p, r in wanted.items()}
            idle_since = time.monotonic()
            while remaining:
                # Ask for no more than the ranges still hold: consume() waits for its count or the timeout.
                left = sum(wanted[p].end - position[p] for p in remaining)
                messages = consumer.consume(num_messages=max(1, min(batch_size, left)), timeout=0.2)
                batch: list[Message] = []
                finished: list[int] = []
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        p, offset = msg.partition(), msg.offset()
                        if err.code() == KafkaError._PARTITION_EOF:
                            if p in remaining and offset < wanted[p].end:
                                raise OffsetRangeUnavailableError(
                                    f"{topic}[{p}] ends at offset {offset} but the range "
                                    f"{wanted[p].start}-{wanted[p].end} was requested (topic truncated or recreated?)")
                            continue
                        raise OffsetRangeUnavailableError(f"reading {topic}[{p}] failed: {err.str()}")
                    batch.append(msg)
                # Keep what lies in the ranges (a fetch may run past a range's end).
                kept = []
                for msg in batch:
                    p = msg.partition()
                    if p not in remaining:
                        continue
                    offset = msg.offset()
                    r = wanted[p]
                    position[p] = offset + 1
                    if offset < r.end:
                        if offset >= r.start:
                            kept.append(msg)
                        if offset == r.end - 1:
                            remaining.discard(p)
                            finished.append(p)
                    else:
                        remaining.discard(p)
                        finished.append(p)
                batch = kept
                if finished:  # stop fetching past the end of finished ranges
                    consumer.incremental_unassign([TopicPartition(topic, p) for p in finished])
                if messages:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.request_timeout_s:
                    missing = ", ".join(f"p{p}:{wanted[p].start}-{wanted[p].end}" for p in sorted(remaining))
                    raise OffsetRangeUnavailableError(
                        f"no data for {topic} {missing} within {self.request_timeout_s:g}s "
                        f"(broker down, or offsets beyond the log end)")
                if batch:
                    yield batch
        finally:
            consumer.close()

    def iter_range_batches(self, topic: str, ranges: Iterable[OffsetRange | tuple[int, int, int]],
                           batch_size: int = 10_000) -> Iterator[list[KafkaRecord]]:
        """Every message of the given offset ranges, in lists of at most `batch_size`.

        Raises `OffsetRangeUnavailableError` when a range cannot be read to its end (the log
        was truncated or recreated), so a run never silently writes a partial range.
        """
        new_record = tuple.__new__
        for messages in self._iter_range_messages(topic, ranges, batch_size):
            batch = []
            for msg in messages:
                ts_type, ts = msg.timestamp()
                batch.append(new_record(KafkaRecord, (topic, msg.partition(), msg.offset(), msg.key(), msg.value(),
                                                      ts if ts_type else None)))
            yield batch

    def iter_range_columns(self, topic: str, ranges: Iterable[OffsetRange | tuple[int, int, int]],
                           batch_size: int = 10_000) -> Iterator[RecordColumns]:
        """`iter_range_batches` as columns (partitions, offsets, keys, values): cheaper for bulk ingest."""
        for messages in self._iter_range_messages(topic, ranges, batch_size):
            yield RecordColumns(partitions=[m.partition() for m in messages], offsets=[m.offset() for m in messages],
                                keys=[m.key() for m in messages], values=[m.value() for m in messages])

    def read_range(self, topic: str, partition: int, start: int, end: int) -> list[KafkaRecord]:
        """Messages `start` (inclusive) to `end` (exclusive) of one partition."""
        return [rec for batch in self.iter_range_batches(topic, [OffsetRange(partition, start, end)]) for rec in batch]

    # -- consumer group offsets ------------------------------------------------------------
    def commit_offsets(self, group: str, topic: str, next_offsets: Mapping[int, int]) -> None:
        """Store `{partition: next offset to read}` for `group` (no group join, synchronous)."""
        if not next_offsets:
            return
        consumer = self.consumer(group_id=group)
        try:
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in sorted(next_offsets.items())],
                            asynchronous=False)
        finally:
            consumer.close()

    def committed_offsets(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        """The offsets `group` committed; None where it has none."""
        consumer = self.consumer(group_id=group)
        try:
            found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=self.request_timeout_s)
        finally:
            consumer.close()
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}

    # -- producing -------------------------------------------------------------------------
    def produce_batch(self, topic: str, messages: Iterable[tuple[bytes | str | None, bytes | str | None]],
                      flush_timeout_s: float = 60.0) -> int:
        """Produce `(key, value)` pairs idempotently, flush, and raise if any was not delivered."""
        producer = self.producer()
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.key()!r}: {err.str()}")

        sent = 0
        for key, value in messages:
            while True:
                try:
                    producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    producer.poll(0.05)
            sent += 1
            if sent % 10_000 == 0:
                producer.poll(0)
        remaining = producer.flush(flush_timeout_s)
        if remaining:
            raise KafkaDeliveryError(f"{remaining} of {sent} messages to {topic} not delivered "
                                     f"within {flush_timeout_s:g}s")
        if failures:
            raise KafkaDeliveryError(f"{len(failures)} of {sent} messages to {topic} failed, e.g. {failures[0]}")
        return sent

    def produce(self, topic: str, key: bytes | str | None, value: bytes | str | None) -> None:
        self.produce_batch(topic, [(key, value)])
