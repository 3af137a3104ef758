"""`KafkaResource`: the one Kafka client of llm-assets (ingest reads, offset commits, publishing).

Reads never join a consumer group: a consumer is `assign()`ed explicit offsets, so a sensor
tick or a run costs no rebalance and re-reads exactly the range it was given. Every read goes
through one consume loop (`KafkaResource.read` -> `TopicRead`): exact offset ranges for a run,
"up to the log end, within limits" for the sensor, both in bounded columnar chunks. The group
(`CONSUMER_GROUP`) only receives commits, for lag dashboards. Producers are always
idempotent (`enable.idempotence` is off by default in librdkafka).

`KafkaIngestSettings` is the ingest sensor's configuration (topic, batch limits, payload
limit) as a resource, so it is bound per environment and never read from the environment
at import.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar, Iterable, Iterator, Mapping, NamedTuple, Sequence

import dagster as dg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from pydantic import Field

from llm_assets.settings import CONSUMER_GROUP, EVENTS_TOPIC

_log = logging.getLogger("llm_assets.kafka")


class KafkaUnavailableError(RuntimeError):
    """The broker did not answer within the request timeout."""


class TopicNotFoundError(LookupError):
    """The topic does not exist on the broker."""


class OffsetRangeUnavailableError(RuntimeError):
    """A requested offset range is no longer (or not yet) in the log."""


class KafkaDeliveryError(RuntimeError):
    """At least one produced message was not acknowledged by the broker."""


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


_END = object()  # the read ahead is done


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass
class ReadProgress:
    """Where a `TopicRead` stands: the offsets to resume from and why it stopped."""

    next_offsets: dict[int, int]  # per partition read from, the offset after the last message read
    high_watermarks: dict[int, int] = field(default_factory=dict)  # log ends reported by the fetches
    at_end: set[int] = field(default_factory=set)  # partitions whose log end was reached
    messages: int = 0
    stopped_by: str = "caught up"
    errors: list[str] = field(default_factory=list)


class TopicRead:
    """One bounded read of a topic (`KafkaResource.read`): iterate it for `RecordColumns` chunks.

    The one consume loop of llm-assets: `assign()` + explicit offsets (no group join), large
    `consume()` calls that never ask for more than is left (it waits for its count or its
    timeout), columns built straight from the batch. Progress comes from the offsets consumed
    and the high watermarks cached from fetch responses (uncached ones are wrong on tansu).
    """

    def __init__(self, kafka: "KafkaResource", topic: str, start_offsets: dict[int, int | None],
                 end_offsets: dict[int, int] | None, *, chunk_size: int, max_messages: int | None,
                 deadline: float | None, idle_timeout_s: float, first_answer_timeout_s: float | None) -> None:
        self._kafka, self.topic = kafka, topic
        self._starts, self._ends = start_offsets, end_offsets
        self._chunk_size, self._max_messages, self._deadline = chunk_size, max_messages, deadline
        self._idle_timeout_s = idle_timeout_s
        self._first_answer_timeout_s = first_answer_timeout_s if first_answer_timeout_s is not None else idle_timeout_s
        self.progress = ReadProgress(next_offsets={p: o for p, o in start_offsets.items() if o is not None})
        self._stop = threading.Event()  # set when the caller stops iterating

    def __iter__(self) -> Iterator[RecordColumns]:
        """The chunks as they fill. A thread reads one chunk ahead, so waiting on the broker
        overlaps the caller's work on the previous chunk (librdkafka, polars and delta-rs all
        release the GIL); memory stays at about three chunks."""
        ahead: queue.Queue = queue.Queue(maxsize=1)
        stop = self._stop = threading.Event()

        def hand_over(item: object) -> bool:
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read_ahead() -> None:
            chunks = self._chunks()
            try:
                for chunk in chunks:
                    if not hand_over(chunk):
                        return
                hand_over(_END)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                hand_over(_Failed(exc))
            finally:
                chunks.close()  # closes the consumer in this thread, which owns it

        reader = threading.Thread(target=read_ahead, name=f"kafka-read-{self.topic}", daemon=True)
        reader.start()
        try:
            while True:
                item = ahead.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            stop.set()
            reader.join()

    def _chunks(self) -> Iterator[RecordColumns]:
        chunk = RecordColumns([], [], [], [])
        for messages, partitions, offsets in self._batches():
            chunk.partitions.extend(partitions)
            chunk.offsets.extend(offsets)
            chunk.keys.extend(map(Message.key, messages))  # map over the C methods: no bytecode per message
            chunk.values.extend(map(Message.value, messages))
            if len(chunk.offsets) >= self._chunk_size:
                yield chunk
                chunk = RecordColumns([], [], [], [])
        if chunk.offsets:
            yield chunk

    def _left(self, consumer: Consumer, remaining: set[int]) -> int | None:
        """Messages still to read: exact for ranges; for an open read, up to the cached high
        watermarks (None while one is unknown)."""
        position = self.progress.next_offsets
        if self._ends is not None:
            return sum(self._ends[p] - position.get(p, self._starts[p] or 0) for p in remaining)
        left = 0
        for p in remaining:
            if p not in position:
                return None
            _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            if high is None or high < 0:
                return None
            left += max(0, high - position[p])
        return left

    def _batches(self) -> Iterator[tuple[list[Message], list[int], list[int]]]:
        exact = self._ends is not None
        progress, topic = self.progress, self.topic
        remaining = set(self._ends if exact else self._starts)
        if not remaining:
            return
        consumer = self._consumer = self._kafka.consumer()
        try:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING if self._starts[p] is None else self._starts[p])
                             for p in sorted(remaining)])
            answered, idle_since = False, time.monotonic()
            while remaining and not self._stop.is_set():
                if self._max_messages is not None and progress.messages >= self._max_messages:
                    progress.stopped_by = f"max_messages ({self._max_messages})"
                    break
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    progress.stopped_by = "time budget"
                    break
                left = self._left(consumer, remaining)
                if left == 0:
                    break  # caught up with the log end of the last fetch
                wanted = self._chunk_size if left is None else min(self._chunk_size, left)
                if self._max_messages is not None:
                    wanted = min(wanted, self._max_messages - progress.messages)
                messages = consumer.consume(num_messages=max(1, wanted), timeout=0.2)
                now = time.monotonic()
                if messages:
                    answered, idle_since = True, now
                else:
                    limit = self._idle_timeout_s if answered else self._first_answer_timeout_s
                    if now - idle_since > limit:
                        if exact:
                            missing = ", ".join(f"p{p}:{progress.next_offsets.get(p, self._starts[p])}-"
                                                f"{self._ends[p]}" for p in sorted(remaining))
                            raise OffsetRangeUnavailableError(
                                f"no data for {topic} {missing} within {limit:g}s "
                                f"(broker down, or offsets beyond the log end)")
                        progress.stopped_by = f"no message for {limit:g}s"
                        break
                    continue
                batch, partitions, offsets = self._keep(messages, remaining, exact)
                if batch:
                    progress.messages += len(batch)
                    yield batch, partitions, offsets
                if not exact and progress.at_end >= remaining:
                    break
        finally:
            for p in self._starts:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                if high is not None and high >= 0:
                    progress.high_watermarks[p] = high
            consumer.close()

    def _keep(self, messages: list[Message], remaining: set[int],
              exact: bool) -> tuple[list[Message], list[int], list[int]]:
        """The messages of one `consume()` that belong to the read, with their partitions and
        offsets; updates the progress."""
        progress = self.progress
        if any(map(Message.error, messages)):
            kept = []
            for m in messages:
                err = m.error()
                if err is None:
                    kept.append(m)
                    continue
                p, offset = m.partition(), m.offset()
                if err.code() == KafkaError._PARTITION_EOF:
                    if exact and p in remaining and offset < self._ends[p]:
                        raise OffsetRangeUnavailableError(
                            f"{self.topic}[{p}] ends at offset {offset} but the range {self._starts[p]}-"
                            f"{self._ends[p]} was requested (topic truncated or recreated?)")
                    progress.at_end.add(p)
                elif exact:
                    raise OffsetRangeUnavailableError(f"reading {self.topic}[{p}] failed: {err.str()}")
                else:
                    progress.errors.append(f"p{p}: {err.str()}")
            messages = kept
        if self._max_messages is not None:
            # Later messages stay unread, so every partition's read span stays contiguous.
            messages = messages[: self._max_messages - progress.messages]
        partitions = list(map(Message.partition, messages))
        offsets = list(map(Message.offset, messages))
        last = dict(zip(partitions, offsets))  # offsets grow within a partition: the last one wins
        if exact:
            ends = self._ends
            if any(p not in remaining or offset >= ends[p] - 1 for p, offset in last.items()):
                # A fetch may run past a range's end: keep what lies in the ranges, stop the finished ones.
                keep = [p in remaining and o < ends[p] for p, o in zip(partitions, offsets)]
                messages = [m for m, k in zip(messages, keep) if k]
                partitions = [p for p, k in zip(partitions, keep) if k]
                offsets = [o for o, k in zip(offsets, keep) if k]
                finished = [p for p, offset in last.items() if p in remaining and offset >= ends[p] - 1]
                remaining.difference_update(finished)
                if finished:  # stop fetching past their ends
                    self._consumer.incremental_unassign([TopicPartition(self.topic, p) for p in finished])
                last = dict(zip(partitions, offsets))
        elif progress.at_end:
            progress.at_end.difference_update(last)  # new messages: not at the end any more
        for p, offset in last.items():
            progress.next_offsets[p] = offset + 1
        return messages, partitions, offsets


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
    def read(self, topic: str, start_offsets: Mapping[int, int | None], *,
             end_offsets: Mapping[int, int] | None = None, chunk_size: int = 50_000,
             max_messages: int | None = None, deadline: float | None = None,
             idle_timeout_s: float | None = None, first_answer_timeout_s: float | None = None) -> TopicRead:
        """A bounded read of `topic` from `start_offsets` (None: the earliest offset), in columnar chunks.

        With `end_offsets` the read covers exactly `[start, end)` of each partition and raises
        `OffsetRangeUnavailableError` when a range cannot be read to its end (the log was
        truncated or recreated), so a run never silently writes a partial range. Without it,
        the read goes up to the log end (as the fetches report it) and stops early at
        `max_messages`, at `deadline` (`time.monotonic()`), or after `idle_timeout_s` without
        a message (`first_answer_timeout_s` before the first one); `TopicRead.progress` then
        says where it stopped and why. Memory stays bounded by `chunk_size` messages however
        long the log is: chunks are yielded as they fill.
        """
        return TopicRead(self, topic, dict(start_offsets), None if end_offsets is None else dict(end_offsets),
                         chunk_size=chunk_size, max_messages=max_messages, deadline=deadline,
                         idle_timeout_s=self.request_timeout_s if idle_timeout_s is None else idle_timeout_s,
                         first_answer_timeout_s=first_answer_timeout_s)

    def read_ranges(self, topic: str, ranges: Iterable[OffsetRange | tuple[int, int, int]],
                    chunk_size: int = 50_000) -> TopicRead:
        """`read` of exact offset ranges (one per partition; an empty range is skipped)."""
        starts: dict[int, int | None] = {}
        ends: dict[int, int] = {}
        for r in (x if isinstance(x, OffsetRange) else OffsetRange(*x) for x in ranges):
            if r.partition in ends:
                raise ValueError(f"two ranges for {topic}[{r.partition}]: merge them into one")
            if r.end > r.start:
                starts[r.partition], ends[r.partition] = r.start, r.end
        return self.read(topic, starts, end_offsets=ends, chunk_size=chunk_size)

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
                      flush_timeout_s: float = 60.0, delivered: list[tuple[bytes, int, int]] | None = None) -> int:
        """Produce `(key, value)` pairs idempotently, flush, and raise if any was not delivered.

        `delivered`, when given, receives `(key, partition, offset)` of every acknowledged message."""
        producer = self.producer()
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.key()!r}: {err.str()}")
            elif delivered is not None:
                delivered.append((msg.key(), msg.partition(), msg.offset()))

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


class KafkaIngestSettings(dg.ConfigurableResource):
    """How `kafka_events_sensor` reads its topic: batch limits, timeouts, the payload limit.

    Bound per environment in `resources/environments.py` (from the variables in
    `VARIABLES` when set), so the sensor reads no environment itself and a test binds its own.
    """

    topic: str = Field(default=EVENTS_TOPIC, description="KAFKA_EVENTS_TOPIC: the topic of raw events")
    # One run per batch costs a run launch (a pod on k8s): keep batches large. A batch is also
    # what a run holds in memory (about 0.5 KB a message), so this bounds a run's memory.
    max_messages: int = Field(default=250_000, description="KAFKA_SENSOR_MAX_MESSAGES: messages per batch")
    time_budget_s: float = Field(default=20.0, description="KAFKA_SENSOR_TIME_BUDGET_S: reading time per tick "
                                                           "(ticks time out at 60 s)")
    idle_timeout_s: float = Field(default=1.0, description="stop reading after this long without a message")
    connect_timeout_s: float = Field(default=3.0, description="how long a tick waits for the broker's first answer")
    max_pending_batches: int = Field(default=50, description="KAFKA_SENSOR_MAX_PENDING_BATCHES: stop reading while "
                                                             "this many batches wait for their runs")
    max_date_gap_days: int = Field(default=3, description="KAFKA_SENSOR_MAX_DATE_GAP_DAYS: touched dates farther "
                                                          "apart get runs of their own")
    max_payload_bytes: int = Field(default=0, description="KAFKA_MAX_PAYLOAD_BYTES: larger values are rejected "
                                                          "(0: the domain pack's `event.max_payload_bytes`)")
    consumer_group: str = Field(default=CONSUMER_GROUP, description="receives the committed offsets (lag dashboards)")
    max_batch_attempts: int = Field(default=4, description="KAFKA_SENSOR_MAX_BATCH_ATTEMPTS: runs the sensor requests "
                                                           "for a batch that keeps failing (after Dagster's own run "
                                                           "retries) before its ticks fail loudly")
    retry_backoff_s: float = Field(default=30.0, description="KAFKA_SENSOR_RETRY_BACKOFF_S: wait after a batch's "
                                                             "first failure before requesting it again (doubling)")

    VARIABLES: ClassVar[dict[str, str]] = {
        "KAFKA_EVENTS_TOPIC": "topic", "KAFKA_SENSOR_MAX_MESSAGES": "max_messages",
        "KAFKA_SENSOR_TIME_BUDGET_S": "time_budget_s", "KAFKA_SENSOR_MAX_PENDING_BATCHES": "max_pending_batches",
        "KAFKA_SENSOR_MAX_DATE_GAP_DAYS": "max_date_gap_days", "KAFKA_MAX_PAYLOAD_BYTES": "max_payload_bytes",
        "KAFKA_SENSOR_MAX_BATCH_ATTEMPTS": "max_batch_attempts", "KAFKA_SENSOR_RETRY_BACKOFF_S": "retry_backoff_s",
    }

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> "KafkaIngestSettings":
        """The settings with every variable of `VARIABLES` that is set (e.g. `os.environ`)."""
        types = {name: type(info.default) for name, info in cls.model_fields.items()}
        return cls(**{field: types[field](variables[var]) for var, field in cls.VARIABLES.items()
                      if variables.get(var)})
