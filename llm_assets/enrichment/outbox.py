"""The outbox of `enriched/cases`: which content version of a case is audited, and which is published.

Delta cannot commit a table, a file and a Kafka topic together, so the rows are written first and
their audit and publication follow as recorded steps. Any run of a date (the next micro-batch, a
retry, a backfill) finishes what an earlier run of it left undone, once:

1. **Pending**: the date's rows whose content version (`event_id`, `row_sha256`) the ledger has not
   recorded as published.
2. **Audit**: pending rows not audited yet get ONE signed bundle for the date (`<run id>.json`),
   then an `audited` entry each (bundle path and sha256, and `publish_from`: offsets of
   `cases.enriched` below which none of their messages can lie). A bundle file that no entry lists
   was written by a run that died before recording it: the next run of its date deletes it once
   that run has ended, so each content version is in exactly one recorded bundle.
3. **Publish**: audited, unpublished rows are produced (key `event_id`, the value carries
   `row_sha256`), then get a `published` entry each (partition, offset). When an earlier run
   recorded the audit, it may have published before it died: the topic is read back from
   `publish_from` and what is there already is recorded, not produced again. So a content
   version reaches the topic once; only a crash inside the producer's own flush can leave a
   duplicate (as with any Kafka producer), and consumers drop it by (`event_id`, `row_sha256`).

The ledger `enrichment/outbox` (Delta, by `event_date`, append-only) is also the audit manifest:
`verify-audit` checks that every bundle it lists exists with the recorded hash and verifies, and
that every row of `enriched/cases` matches the row hash of the bundle that covers it.

A date another run may still be writing (one in flight) is drained only of this run's own rows:
the rest is left to the run that wrote them, or to a later run once it ended.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Mapping, Sequence

import polars as pl

from llm_assets import failpoints
from llm_assets.asset_keys import ENRICHED_OUTBOX
from llm_assets.enrichment import audit
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource

AUDITED = "audited"
PUBLISHED = "published"
ROW_HASH = "row_sha256"
LEDGER_SCHEMA = {
    "event_date": pl.String, "event_id": pl.String, ROW_HASH: pl.String, "state": pl.String,
    "bundle_path": pl.String, "bundle_sha256": pl.String, "run_id": pl.String, "publish_from": pl.String,
    "kafka_partition": pl.Int64, "kafka_offset": pl.Int64, "recorded_at": pl.Datetime("us", "UTC"),
}


def read_ledger(delta: DeltaLakeStorage, days: Sequence[str]) -> pl.DataFrame:
    """The ledger entries of `days` (empty, with the schema, before the first entry)."""
    if not delta.exists(ENRICHED_OUTBOX):
        return pl.DataFrame(schema=LEDGER_SCHEMA)
    return delta.scan(ENRICHED_OUTBOX).filter(pl.col("event_date").is_in(list(days))).collect()


def _keys(frame: pl.DataFrame, state: str | None = None) -> set[tuple[str, str]]:
    if state is not None:
        frame = frame.filter(pl.col("state") == state)
    return set(zip(frame["event_id"].to_list(), frame[ROW_HASH].to_list()))


def pending_keys(partition: pl.DataFrame, ledger: pl.DataFrame, own: set[tuple[str, str]],
                 shared: bool, is_finished: Callable[[str], bool]) -> set[tuple[str, str]]:
    """The content versions of one date (`partition`: event_id, row_sha256) not yet published.

    `shared`: another run in flight may be writing the date, so only `own` rows (this run's) are
    taken. An audit recorded by a run that has not ended is that run's to publish.
    """
    pending = _keys(partition) - _keys(ledger, PUBLISHED)
    if shared:
        pending &= own
    audited = ledger.filter(pl.col("state") == AUDITED)
    running = {run for run in audited["run_id"].unique().to_list() if not is_finished(run)}
    return pending - (_keys(audited.filter(pl.col("run_id").is_in(list(running)))) - own)


@dataclass
class Drained:
    """What one run did for one date's outbox."""

    day: str
    pending: int = 0
    audited: int = 0
    published: int = 0
    found_on_topic: int = 0      # published by a run that died before recording it
    bundle_path: str | None = None
    orphans_removed: list[str] = field(default_factory=list)


def remove_orphan_bundles(artifacts: ArtifactStore, day: str, ledger: pl.DataFrame, run_id: str,
                          is_finished: Callable[[str], bool]) -> list[str]:
    """Delete the date's bundle files that no ledger entry lists, written by runs that have ended
    (they died between the bundle and its record; their cases are audited again by this run).
    Bundles of an older format predate the ledger: they are history, never removed."""
    recorded = set(ledger.filter(pl.col("state") == AUDITED)["bundle_path"].drop_nulls().to_list())
    removed = []
    for path in artifacts.list(audit.bundle_folder(day)):
        writer = path.rsplit("/", 1)[-1].removesuffix(".json")
        if path in recorded or not path.endswith(".json") or (writer != run_id and not is_finished(writer)):
            continue
        if audit.bundle_format(artifacts.read_bytes(path)) != audit.BUNDLE_FORMAT:
            continue
        artifacts.delete(path)
        removed.append(path)
    return removed


def _publish_from(ledger: pl.DataFrame) -> dict[str, int]:
    """Per partition of cases.enriched, one past the highest offset the ledger knows was delivered:
    every message produced after this was read lies at or above it."""
    published = ledger.filter((pl.col("state") == PUBLISHED) & pl.col("kafka_offset").is_not_null())
    if published.is_empty():
        return {}
    top = published.group_by("kafka_partition").agg(pl.col("kafka_offset").max())
    return {str(p): int(o) + 1 for p, o in top.iter_rows()}


def _message(row: Mapping) -> bytes:
    enriched_at = row.get("enriched_at")
    return json.dumps({**row, "enriched_at": enriched_at.isoformat() if enriched_at else None}).encode()


def _already_on_topic(kafka: KafkaResource, topic: str, wanted: set[tuple[str, str]],
                      starts: list[dict[str, int]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(event_id, row_sha256) -> (partition, offset) of the `wanted` versions found on `topic`,
    read from the lowest `publish_from` of the audits that may have been published."""
    partitions = kafka.topic_partitions(topic)
    start = {p: min((s.get(str(p), 0) for s in starts), default=0) for p in partitions}
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for chunk in kafka.read(topic, start):
        for p, offset, key, value in zip(chunk.partitions, chunk.offsets, chunk.keys, chunk.values):
            try:
                version = json.loads(value).get(ROW_HASH)
            except (ValueError, AttributeError, TypeError):
                continue
            event_id = key.decode() if isinstance(key, bytes) else key
            if (event_id, version) in wanted:
                found.setdefault((event_id, version), (p, offset))
    return found


def _entries(rows: list[dict], **values) -> pl.DataFrame:
    now = datetime.now(timezone.utc)
    frame = [{"event_date": r["event_date"], "event_id": r["event_id"], ROW_HASH: r[ROW_HASH], "recorded_at": now,
              **{k: (v(r) if callable(v) else v) for k, v in values.items()}} for r in rows]
    return pl.DataFrame(frame, schema=LEDGER_SCHEMA)


def drain(*, delta: DeltaLakeStorage, kafka: KafkaResource, artifacts: ArtifactStore, topic: str,
          pending_rows: Mapping[str, list[dict]], ledger: pl.DataFrame, run_id: str, mode: str,
          delta_versions: Mapping[str, int | None], signing_key: bytes, publish: bool,
          is_finished: Callable[[str], bool]) -> dict[str, Drained]:
    """Audit, then publish, each date's pending rows (full `enriched/cases` rows with `row_sha256`),
    recording each step in the ledger (see the module docstring)."""
    outcome = {day: Drained(day, pending=len(rows)) for day, rows in pending_rows.items()}
    by_day = {day: ledger.filter(pl.col("event_date") == day) for day in pending_rows}
    # (event_id, row_sha256) -> (run id, publish_from) of the audits recorded before this run
    audited_before = {}
    for event_id, version, run, start in ledger.filter(pl.col("state") == AUDITED).select(
            "event_id", ROW_HASH, "run_id", "publish_from").iter_rows():
        audited_before[(event_id, version)] = (run, start)

    # 2. Audit: one bundle per date for what no recorded bundle covers yet.
    start = json.dumps(_publish_from(ledger), sort_keys=True)
    new_audits = []
    for day, rows in pending_rows.items():
        outcome[day].orphans_removed = remove_orphan_bundles(artifacts, day, by_day[day], run_id, is_finished)
        unaudited = [r for r in rows if (r["event_id"], r[ROW_HASH]) not in audited_before]
        if not unaudited:
            continue
        path = audit.write_bundle(artifacts, audit.build_bundle(day, unaudited, run_id=run_id,
                                                                delta_version=delta_versions.get(day), mode=mode),
                                  signing_key)
        digest = hashlib.sha256(artifacts.read_bytes(path)).hexdigest()
        outcome[day].bundle_path, outcome[day].audited = path, len(unaudited)
        new_audits.append(_entries(unaudited, state=AUDITED, bundle_path=path, bundle_sha256=digest, run_id=run_id,
                                   publish_from=start))
    failpoints.hit(failpoints.AFTER_AUDIT_BUNDLE)
    if new_audits:
        delta.append(ENRICHED_OUTBOX, pl.concat(new_audits), partition_column="event_date")
    failpoints.hit(failpoints.AFTER_AUDIT_RECORD)
    if not publish:
        return outcome

    # 3. Publish: what an earlier (ended) run recorded may be on the topic already.
    earlier = {key: audited_before[key] for rows in pending_rows.values() for r in rows
               if (key := (r["event_id"], r[ROW_HASH])) in audited_before and audited_before[key][0] != run_id}
    found = _already_on_topic(kafka, topic, set(earlier), [json.loads(s or "{}") for _, s in earlier.values()]) \
        if earlier else {}
    to_send = [r for rows in pending_rows.values() for r in rows if (r["event_id"], r[ROW_HASH]) not in found]
    delivered: list[tuple[bytes, int, int]] = []
    if to_send:
        kafka.produce_batch(topic, [(r["event_id"], _message(r)) for r in to_send], delivered=delivered)
    failpoints.hit(failpoints.AFTER_PUBLISH)
    where = dict(found)
    sent_keys = [(r["event_id"], r[ROW_HASH]) for r in to_send]
    # Delivery reports name the key only; one message per (event_id) per run, so the key is enough.
    by_event = {key.decode() if isinstance(key, bytes) else key: (p, o) for key, p, o in delivered}
    where.update({k: by_event[k[0]] for k in sent_keys if k[0] in by_event})
    published = [r for rows in pending_rows.values() for r in rows if (r["event_id"], r[ROW_HASH]) in where]
    if published:
        delta.append(ENRICHED_OUTBOX, _entries(
            published, state=PUBLISHED, run_id=run_id,
            kafka_partition=lambda r: where[(r["event_id"], r[ROW_HASH])][0],
            kafka_offset=lambda r: where[(r["event_id"], r[ROW_HASH])][1]), partition_column="event_date")
    for day, rows in pending_rows.items():
        keys = {(r["event_id"], r[ROW_HASH]) for r in rows}
        outcome[day].published = len(keys & set(where))
        outcome[day].found_on_topic = len(keys & set(found))
    return outcome


def bundles_by_day(ledger: pl.DataFrame) -> dict[str, dict[str, str]]:
    """The audit manifest: per date, every recorded bundle path and its sha256."""
    manifest: dict[str, dict[str, str]] = defaultdict(dict)
    for day, path, digest in ledger.filter(pl.col("state") == AUDITED).select(
            "event_date", "bundle_path", "bundle_sha256").unique().iter_rows():
        manifest[day][path] = digest
    return dict(manifest)
