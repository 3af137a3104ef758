"""Offset ranges of a topic as records, read through `KafkaResource`'s one consume loop (the tests'
view; the ingest run consumes the same ranges as columnar chunks, `KafkaResource.read_ranges`)."""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple

from llm_assets.resources.kafka import KafkaResource, OffsetRange


class KafkaRecord(NamedTuple):
    """One consumed message, detached from librdkafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def iter_range_batches(kafka: KafkaResource, topic: str, ranges: Iterable[OffsetRange | tuple[int, int, int]],
                       batch_size: int = 10_000) -> Iterator[list[KafkaRecord]]:
    """Every message of the given offset ranges as records, in lists of at most `batch_size`."""
    for chunk in kafka.read_ranges(topic, ranges, chunk_size=batch_size):
        yield [KafkaRecord(topic, p, o, k, v) for p, o, k, v in zip(*chunk)]


def read_range(kafka: KafkaResource, topic: str, partition: int, start: int, end: int) -> list[KafkaRecord]:
    """Messages `start` (inclusive) to `end` (exclusive) of one partition."""
    return [rec for batch in iter_range_batches(kafka, topic, [OffsetRange(partition, start, end)]) for rec in batch]
