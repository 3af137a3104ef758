"""Offset bookkeeping of the Kafka ingest: the sensor cursor, batch plans and run keys.

Pure (pydantic and polars, no Dagster): what the sensor decides from the offsets it read is
computed here and unit-tested on its own; `llm_assets/sensors/kafka_events.py` only talks to
Kafka and the Dagster instance.

A batch becomes as few runs as possible: one run per cluster of touched `event_date`s
(dates at most `max_date_gap_days` apart share a run, as one partition key range), each run
reading once the offsets that hold its dates. The run of the cluster with the most messages
also writes the batch's invalid messages, so it reads the whole batch span (usually what it
reads anyway); a batch without any valid message becomes one dead-letter-only run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Mapping, Sequence

import polars as pl
from pydantic import BaseModel, Field

REJECTED = "rejected"


def ranges_text(ranges: Mapping[int, tuple[int, int]]) -> str:
    """`p0:100-200,p1:50-70` (start inclusive, end exclusive), partitions in order."""
    return ",".join(f"p{p}:{s}-{e}" for p, (s, e) in sorted(ranges.items()))


def run_key(topic: str, generation: int, ranges: Mapping[int, tuple[int, int]], target: str) -> str:
    """Unique per batch and run: `events.raw:g0:p0:100-200:2026-11-17..2026-11-18` (or `:rejected`).

    Offset ranges of two batches never overlap, two runs of one batch have different date
    ranges, and the generation changes whenever the topic's log restarts, so a run key is
    never reused (a reused key silently drops a run).
    """
    return f"{topic}:g{generation}:{ranges_text(ranges)}:{target}"


@dataclass(frozen=True)
class PlannedRun:
    """One run of a batch: a date range of `raw/events` (None: dead letters only) and what to read."""

    first_date: str | None
    last_date: str | None
    ranges: dict[int, tuple[int, int]]
    dead_letters: bool
    messages: int  # valid messages of its dates

    @property
    def target(self) -> str:
        if self.first_date is None:
            return REJECTED
        return self.first_date if self.first_date == self.last_date else f"{self.first_date}..{self.last_date}"


@dataclass
class BatchPlan:
    """What one sensor tick read and the runs that write it."""

    runs: list[PlannedRun] = field(default_factory=list)
    read: dict[int, tuple[int, int]] = field(default_factory=dict)  # every offset read, per partition
    counts: dict[str, int] = field(default_factory=dict)  # messages per event_date / `rejected`

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())


def date_clusters(dates: Iterable[str], max_gap_days: int) -> list[list[str]]:
    """Sorted dates split wherever two neighbours are more than `max_gap_days` apart."""
    clusters: list[list[str]] = []
    for day in sorted(set(dates)):
        if clusters and (date.fromisoformat(day) - date.fromisoformat(clusters[-1][-1])).days <= max_gap_days:
            clusters[-1].append(day)
        else:
            clusters.append([day])
    return clusters


def _spans(df: pl.DataFrame) -> dict[int, tuple[int, int]]:
    """Per partition, the smallest `[start, end)` holding the offsets of `df`."""
    spans = df.group_by("partition").agg(pl.col("offset").min().alias("start"), pl.col("offset").max().alias("last"))
    return {p: (s, last + 1) for p, s, last in spans.iter_rows()}


def plan_batch(partitions: Sequence[int] | pl.Series, offsets: Sequence[int] | pl.Series,
               dates: Sequence[str | None] | pl.Series, max_date_gap_days: int = 3) -> BatchPlan:
    """Group a batch's messages (`event_date` None: invalid) into runs (module docstring).

    A run's ranges are the smallest per-partition spans holding its messages, so a run for a
    late date re-reads little more than it writes; a run keeps only its own dates anyway.
    """
    df = pl.DataFrame({"partition": pl.Series(partitions, dtype=pl.Int64), "offset": pl.Series(offsets, dtype=pl.Int64),
                       "event_date": pl.Series(dates, dtype=pl.String)})
    plan = BatchPlan()
    if df.is_empty():
        return plan
    plan.read = _spans(df)
    plan.counts = {(d if d is not None else REJECTED): n for d, n in df.group_by("event_date").len().iter_rows()}
    valid = df.filter(pl.col("event_date").is_not_null())
    runs = []
    for cluster in date_clusters(valid["event_date"].unique().to_list(), max_date_gap_days):
        rows = valid.filter(pl.col("event_date").is_in(cluster))
        runs.append(PlannedRun(cluster[0], cluster[-1], _spans(rows), dead_letters=False, messages=rows.height))
    # Invalid messages lie anywhere in the batch: the run that dead-letters them reads its whole span
    # (one read of every offset instead of many seeks to scattered ones, about 40 ms each on tansu).
    if runs:
        main = max(range(len(runs)), key=lambda i: runs[i].messages)
        r = runs[main]
        runs[main] = PlannedRun(r.first_date, r.last_date, dict(plan.read), dead_letters=True, messages=r.messages)
    else:
        runs.append(PlannedRun(None, None, dict(plan.read), dead_letters=True, messages=0))
    plan.runs = runs
    return plan


class PendingBatch(BaseModel):
    """Runs requested for one batch; its offsets are committed once all of them succeeded."""

    batch_id: str
    run_keys: list[str]
    next_offsets: dict[int, int]
    requested_at: float
    attempts: dict[str, int] = Field(default_factory=dict)  # run key -> runs the sensor requested (absent: 1)


def retry_delay_s(attempts: int, base_s: float, cap_s: float = 600.0) -> float:
    """How long after the failure of attempt `attempts` the sensor requests the next: doubling from `base_s`."""
    return min(cap_s, base_s * 2 ** max(0, attempts - 1))


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
