"""Offset bookkeeping of the Kafka ingest: the sensor cursor, batch plans and run keys.

Pure (pydantic, no Dagster): what the sensor decides from the offsets it read is computed
here and unit-tested on its own; `llm_assets/sensors/kafka_events.py` only talks to Kafka
and the Dagster instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from pydantic import BaseModel, Field

REJECTED = "rejected"


def ranges_text(ranges: Mapping[int, tuple[int, int]]) -> str:
    """`p0:100-200,p1:50-70` (start inclusive, end exclusive), partitions in order."""
    return ",".join(f"p{p}:{s}-{e}" for p, (s, e) in sorted(ranges.items()))


def run_key(topic: str, generation: int, ranges: Mapping[int, tuple[int, int]], target: str) -> str:
    """Unique per batch and target (an event date or `rejected`): `events.raw:g0:p0:100-200:2026-11-18`.

    Offset ranges of two batches never overlap, and the generation changes whenever the
    topic's log restarts, so a run key is never reused (a reused key silently drops a run).
    """
    return f"{topic}:g{generation}:{ranges_text(ranges)}:{target}"


@dataclass
class BatchPlan:
    """What one sensor tick read, grouped by where it must be written."""

    by_date: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    rejected: dict[int, tuple[int, int]] = field(default_factory=dict)
    read: dict[int, tuple[int, int]] = field(default_factory=dict)  # every offset read, per partition
    counts: dict[str, int] = field(default_factory=dict)  # messages per event_date / `rejected`

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())


def _widen(ranges: dict[int, tuple[int, int]], partition: int, offset: int) -> None:
    start, end = ranges.get(partition, (offset, offset + 1))
    ranges[partition] = (min(start, offset), max(end, offset + 1))


def plan_batch(outcomes: Iterable[tuple[int, int, str | None]]) -> BatchPlan:
    """Group `(partition, offset, event_date or None for invalid)` into per-date offset ranges.

    Each date's range is the smallest per-partition span holding its messages, so a run
    re-reads little more than it writes; the run filters on its own date anyway.
    """
    plan = BatchPlan()
    for partition, offset, event_date in outcomes:
        target = event_date or REJECTED
        _widen(plan.rejected if event_date is None else plan.by_date.setdefault(event_date, {}), partition, offset)
        _widen(plan.read, partition, offset)
        plan.counts[target] = plan.counts.get(target, 0) + 1
    return plan


class PendingBatch(BaseModel):
    """Runs requested for one batch; its offsets are committed once all of them succeeded."""

    batch_id: str
    run_keys: list[str]
    next_offsets: dict[int, int]
    requested_at: float


class IngestCursor(BaseModel):
    """The sensor cursor, stored as JSON.

    `next_offsets`: per partition, the next offset to read (absent: the earliest offset).
    `pending`: batches whose runs have not all succeeded yet, oldest first.
    `committed`: what was last committed to the consumer group.
    `generation`: bumped whenever the log restarts (topic recreated, cursor beyond the end).
    """

    topic: str
    topic_id: str | None = None
    generation: int = 0
    next_offsets: dict[int, int] = Field(default_factory=dict)
    pending: list[PendingBatch] = Field(default_factory=list)
    committed: dict[int, int] = Field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None, topic: str) -> "IngestCursor":
        if not raw:
            return cls(topic=topic)
        cursor = cls.model_validate_json(raw)
        if cursor.topic != topic:  # the sensor was pointed at another topic: start over on it
            return cls(topic=topic)
        return cursor

    def dump(self) -> str:
        return self.model_dump_json()

    def restart_log(self, topic_id: str | None, partitions: Iterable[int] | None = None) -> "IngestCursor":
        """The documented recovery: read the new log from its earliest offset.

        `partitions=None` resets every partition (topic recreated) and drops the pending
        batches (their offsets belong to a log that no longer exists) and the committed
        offsets (deleted with the topic); otherwise only those partitions restart.
        """
        if partitions is None:
            return IngestCursor(topic=self.topic, topic_id=topic_id, generation=self.generation + 1)
        reset = set(partitions)
        return self.model_copy(update={
            "topic_id": topic_id, "generation": self.generation + 1,
            "next_offsets": {p: o for p, o in self.next_offsets.items() if p not in reset},
            "pending": [b for b in self.pending if not reset & set(b.next_offsets)],
            "committed": {p: o for p, o in self.committed.items() if p not in reset},
        })


def offsets_to_commit(cursor: IngestCursor, finished_batch_ids: set[str]) -> tuple[dict[int, int], int]:
    """The offsets of the leading run of finished batches, and how many batches that is.

    Batches are committed strictly in order: a finished batch behind an unfinished one waits,
    so the group never claims an offset whose messages are not written yet.
    """
    offsets: dict[int, int] = {}
    done = 0
    for batch in cursor.pending:
        if batch.batch_id not in finished_batch_ids:
            break
        for p, o in batch.next_offsets.items():
            offsets[p] = max(o, offsets.get(p, 0))
        done += 1
    return offsets, done
