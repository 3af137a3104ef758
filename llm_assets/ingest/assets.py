"""The ingest assets: `raw/events` (valid events per UTC day) and `raw/rejected_events` (dead letter).

Both come out of one computation, `ingest_kafka_batch`: a run re-reads the Kafka offset
ranges of one sensor batch (run config: offsets, never payloads) ONCE, validates every
message with the pure contract (`contract.validate_values`) and writes

- the valid events of the run's `event_date` partitions to `raw/events` (daily). A run
  covers a partition key range (`BackfillPolicy.single_run()`): the sensor requests one run
  per batch and cluster of nearby touched dates; each touched date is MERGEd on `event_id`
  with the partition column in the predicate. A date of the range without events is not
  written (Dagster still records the range's materialization for it); a run without any
  valid event of its dates materializes nothing;
- every invalid message of the ranges to `raw/rejected_events` (unpartitioned), MERGEd on
  (topic, topic_id, partition, offset, message_sha256): a replay is the same row, and a
  message at an offset reused after the topic was recreated is a new one (the broker's topic
  id names the log's incarnation, so even the same bytes at the same offset count again).

So a duplicate delivery is one row, a re-run writes nothing, and the valid events of a
batch are never lost because of its invalid ones. Reading the batch once is what lets the
ingest keep up: on tansu, one more read of a 100k-message batch costs about as much as the
whole raw consume, and seeking to scattered invalid offsets costs about 40 ms per seek.
The multi-asset is subsettable: `ingest_rejected_events_job` re-dead-letters ranges alone,
and the sensor's extra runs for far-apart late dates leave `raw/rejected_events` out.
`ingest_events_job`, the job the sensor requests, carries a batch's dates on through
`curated/cases` and `enriched/cases` in the same run (the hot path).

The per-partition checks of `raw/events` are in `checks.py` (they evaluate every partition
of a range run on its own).
"""

import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Iterator

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets import failpoints
from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS, REJECTED_EVENTS
from llm_assets.ingest import contract
from llm_assets.ingest.checks import RAW_EVENTS_CHECK_SPECS, raw_events_check_evaluations
from llm_assets.ingest.contract import PartitionWindow
from llm_assets.metadata import frame_table, markdown_table
from llm_assets.partitions import daily_partitions
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.environments import current_environment
from llm_assets.resources.kafka import KafkaResource, OffsetRange
from llm_assets.settings import EVENTS_TOPIC

READ_CHUNK = 50_000  # messages validated per call (polars' per-call cost dominates below this)


class KafkaOffsetRange(dg.Config):
    partition: int = Field(description="Kafka partition")
    start: int = Field(description="first offset (inclusive)")
    end: int = Field(description="last offset (exclusive)")


class KafkaBatchConfig(dg.Config):
    """The offset ranges of one sensor batch; the run re-reads exactly these."""

    topic: str = Field(default=EVENTS_TOPIC)
    ranges: list[KafkaOffsetRange] = Field(description="offset ranges to read, one per partition")
    max_payload_bytes: int = Field(default=0, description="larger message values are rejected (0: the domain "
                                                          "pack's `event.max_payload_bytes`)")
    last_partition_date: str | None = Field(
        default=None, description="the last event_date accepted, as the sensor saw it (today's last partition "
                                  "when unset); fixed per batch so the sensor and every re-run agree")


def current_partition_window(last_partition_date: str | None = None) -> PartitionWindow:
    """The dates that have a `daily_partitions` key (the last one moves every day)."""
    last = last_partition_date or daily_partitions.get_last_partition_key()
    return PartitionWindow(first=daily_partitions.start.date(),
                           last=date.fromisoformat(last) if last else daily_partitions.start.date())


@dataclass
class ReadBatch:
    """One read of a batch's ranges: the valid events as `raw/events` rows, the others as dead letters."""

    events: pl.DataFrame
    rejected: pl.DataFrame
    messages_read: int = 0
    read_seconds: float = 0.0  # reading and validating


def read_batch(kafka: KafkaResource, config: KafkaBatchConfig, now: datetime) -> ReadBatch:
    """Read and validate every message of the configured ranges, once, chunk by chunk."""
    started = time.perf_counter()
    window = current_partition_window(config.last_partition_date)
    ranges = [OffsetRange(r.partition, r.start, r.end) for r in config.ranges]
    events, rejected, read = [], [], 0
    topic_id = None  # the log's incarnation, asked for once, only when a message is rejected
    with contract.gc_paused():  # 100k messages read in bulk: no cyclic garbage, no GC passes
        for chunk in kafka.read_ranges(config.topic, ranges, chunk_size=READ_CHUNK):
            read += len(chunk.offsets)
            checked = contract.validate_values(
                chunk.values, max_payload_bytes=contract.current_max_payload_bytes(config.max_payload_bytes),
                window=window)
            events.append(contract.valid_events_frame(checked, topic=config.topic, partitions=chunk.partitions,
                                                      offsets=chunk.offsets, ingested_at=now, keys=chunk.keys))
            if checked.rejected.height and topic_id is None:
                topic_id = kafka.topic_id(config.topic) or ""
            rejected.append(contract.rejected_events_frame(
                checked, topic=config.topic, partitions=chunk.partitions, offsets=chunk.offsets, keys=chunk.keys,
                values=chunk.values, seen_at=now, topic_id=topic_id or ""))
    return ReadBatch(events=pl.concat(events) if events else contract.events_frame([]),
                     rejected=pl.concat(rejected) if rejected else contract.rejected_frame([]), messages_read=read,
                     read_seconds=time.perf_counter() - started)


def _ranges_text(config: KafkaBatchConfig) -> str:
    return ", ".join(f"p{r.partition}:{r.start}-{r.end}" for r in config.ranges)


def _stored_content(delta: DeltaLakeStorage, incoming: pl.DataFrame, days: list[str]) -> pl.DataFrame:
    """The stored rows of the incoming event_ids in the touched partitions (to skip unchanged ones)."""
    if incoming.is_empty() or not delta.exists(RAW_EVENTS):
        return pl.DataFrame(schema={c: contract.RAW_EVENTS_SCHEMA[c] for c in contract.EVENT_CONTENT_COLUMNS})
    return (delta.scan(RAW_EVENTS)
            .filter(pl.col("event_date").is_in(days) & pl.col("event_id").is_in(incoming["event_id"].implode()))
            .select(list(contract.EVENT_CONTENT_COLUMNS)).collect())


def write_raw_events(context: dg.AssetExecutionContext, batch: ReadBatch, config: KafkaBatchConfig,
                     delta: DeltaLakeStorage) -> dg.MaterializeResult | None:
    """MERGE the batch's valid events of the run's partition keys, one touched date at a time.

    None when the batch holds no valid event of these dates (the sensor dated an invalid
    message there): then nothing is materialized.
    """
    started = time.perf_counter()
    run_days = set(context.partition_keys)
    in_run = batch.events.filter(pl.col("event_date").is_in(sorted(run_days)))
    if in_run.is_empty():
        context.log.info(f"raw/events: no valid event of {context.partition_key_range.start}.."
                         f"{context.partition_key_range.end} in {_ranges_text(config)}; nothing to write")
        return None
    # One row per (date, event_id) of this batch, the last delivery winning, as the MERGE would.
    incoming = in_run.unique(subset=["event_date", "event_id"], keep="last", maintain_order=True)
    touched = sorted(incoming["event_date"].unique().to_list())
    to_write = contract.new_or_changed_events(incoming, _stored_content(delta, incoming, touched))
    per_day = []
    failpoints.hit(failpoints.BEFORE_RAW_WRITE)
    for day in touched:
        rows = to_write.filter(pl.col("event_date") == day)
        # merge_schema: a table from before a new column (kafka_key) gains it on its next write.
        counts = delta.merge(RAW_EVENTS, rows, ["event_id"], partition_column="event_date", partition_value=day,
                             merge_schema=True)
        per_day.append({"event_date": day, "valid": int((incoming["event_date"] == day).sum()),
                        "inserted": counts["inserted"], "updated": counts["updated"]})
    failpoints.hit(failpoints.AFTER_RAW_WRITE)
    stored_counts = {}
    if touched:
        stored_counts = dict(delta.scan(RAW_EVENTS)
                             .filter(pl.col("event_date").is_in(touched)).group_by("event_date").len()
                             .collect().iter_rows())
    for row in per_day:
        row["partition_rows"] = stored_counts.get(row["event_date"], 0)
    mismatched = incoming.filter(pl.col("kafka_key").is_not_null() & (pl.col("kafka_key") != pl.col("event_id")))
    if mismatched.height:
        context.log.warning(f"raw/events: {mismatched.height} message(s) keyed otherwise than by their event_id "
                            f"(accepted; the key is kept in kafka_key), e.g. key {mismatched['kafka_key'][0]!r} for "
                            f"event_id {mismatched['event_id'][0]!r}: the producer should key by event_id")
    inserted = sum(r["inserted"] for r in per_day)
    updated = sum(r["updated"] for r in per_day)
    context.log.info(f"raw/events {context.partition_key_range.start}..{context.partition_key_range.end}: "
                     f"read {batch.messages_read}, {incoming.height} valid in range over {len(touched)} date(s), "
                     f"{inserted} inserted, {updated} updated")
    return dg.MaterializeResult(asset_key=RAW_EVENTS, metadata={
        "kafka_topic": config.topic,
        "kafka_ranges": _ranges_text(config),
        "messages_read": batch.messages_read,
        "valid_in_range": incoming.height,
        "valid_other_dates": batch.events.height - in_run.height,
        "invalid": batch.rejected.height,
        "key_mismatches": mismatched.height,
        "dates_touched": len(touched),
        "dates_in_range": len(run_days),
        "rows_inserted": inserted,
        "rows_updated": updated,
        "rows_unchanged": incoming.height - to_write.height,
        "read_seconds": round(batch.read_seconds, 3),
        "write_seconds": round(time.perf_counter() - started, 3),
        "by_date": frame_table(pl.DataFrame(per_day, schema={"event_date": pl.String, "valid": pl.Int64,
                                                            "inserted": pl.Int64, "updated": pl.Int64,
                                                            "partition_rows": pl.Int64}), limit=100),
        "preview": frame_table(incoming.select("event_id", "event_date", "event_ts", "source_system", "payload_raw")),
    })


def _stored_rejection_keys(delta: DeltaLakeStorage, config: KafkaBatchConfig) -> pl.DataFrame:
    """The dead letters already stored for the configured ranges (their identity columns)."""
    empty = pl.DataFrame(schema={k: contract.REJECTED_EVENTS_SCHEMA[k] for k in contract.REJECTED_KEY_COLUMNS})
    if not delta.exists(REJECTED_EVENTS):
        return empty
    table = delta.scan(REJECTED_EVENTS)
    if not set(contract.REJECTED_KEY_COLUMNS) <= set(table.collect_schema().names()):
        return empty  # written before the identity included the content and the log: the MERGE adds them
    in_ranges = pl.lit(False)
    for r in config.ranges:
        in_ranges = in_ranges | ((pl.col("partition") == r.partition)
                                 & pl.col("offset").is_between(r.start, r.end, closed="left"))
    return table.filter((pl.col("topic") == config.topic) & in_ranges).select(
        list(contract.REJECTED_KEY_COLUMNS)).collect()


def write_rejected_events(context: dg.AssetExecutionContext, batch: ReadBatch, config: KafkaBatchConfig,
                          delta: DeltaLakeStorage) -> dg.MaterializeResult:
    """MERGE the batch's invalid messages into the dead letter; already present ones are skipped."""
    incoming = batch.rejected
    stored = _stored_rejection_keys(delta, config) if incoming.height else None
    to_write = contract.unseen_rejections(incoming, stored) if stored is not None else incoming
    counts = delta.merge(REJECTED_EVENTS, to_write, list(contract.REJECTED_KEY_COLUMNS), merge_schema=True)
    by_reason = incoming.group_by("error").len().sort(["len", "error"], descending=[True, False])
    context.log.info(f"raw/rejected_events: {incoming.height} invalid of {batch.messages_read} read, "
                     f"{counts['inserted']} new in the dead letter")
    return dg.MaterializeResult(asset_key=REJECTED_EVENTS, metadata={
        "kafka_topic": config.topic,
        "kafka_ranges": _ranges_text(config),
        "messages_read": batch.messages_read,
        "rejected": incoming.height,
        "rows_inserted": counts["inserted"],
        "rows_already_present": incoming.height - to_write.height,
        "table_row_count": delta.count(REJECTED_EVENTS),
        "reasons": markdown_table(["reason", "messages"], by_reason.head(20).iter_rows()),
    })


@dg.multi_asset(
    name="ingest_kafka_batch",
    specs=[
        dg.AssetSpec(
            RAW_EVENTS, partitions_def=daily_partitions, kinds={"kafka", "delta"}, group_name="ingest",
            skippable=True,  # a run whose dates got no valid event materializes nothing
            description="Valid `events.raw` events by UTC day (`event_date` from `event_ts`), one row per "
                        "`event_id`. A run re-reads one sensor batch's Kafka offset ranges, validates them with "
                        "the events.raw contract and MERGEs each touched date of its partition range on "
                        "`event_id` (partition column in the predicate); unknown fields are kept as JSON in "
                        "`extra`. Dates of the range without events are not written."),
        dg.AssetSpec(
            REJECTED_EVENTS, kinds={"kafka", "delta"}, group_name="ingest",
            description="Dead letter of `events.raw`: every message that breaks the contract, one row per "
                        "(topic, topic_id of the log's incarnation, partition, offset, message_sha256 of key and "
                        "value) with the key, the raw value "
                        "(base64) and a readable error. "
                        "Written by the same run as `raw/events` from the same read, MERGEd on its key and "
                        "never rewritten, so re-runs are idempotent."),
    ],
    check_specs=RAW_EVENTS_CHECK_SPECS,
    can_subset=True,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def ingest_kafka_batch(context: dg.AssetExecutionContext, config: KafkaBatchConfig, kafka: KafkaResource,
                       delta: DeltaLakeStorage) -> Iterator[dg.MaterializeResult]:
    """Read one Kafka batch once; write its valid events to `raw/events` (then judge each date of the run with
    its checks) and the rest to `raw/rejected_events`."""
    batch = read_batch(kafka, config, datetime.now(timezone.utc))
    if RAW_EVENTS in context.selected_asset_keys:
        written = write_raw_events(context, batch, config, delta)
        if written is not None:
            yield written
        yield from raw_events_check_evaluations(context, delta)
    if REJECTED_EVENTS in context.selected_asset_keys:
        yield write_rejected_events(context, batch, config, delta)


# The hot path of a sensor batch, downstream of ingest: selected by key (`ingest/` imports no other
# domain), so the ingest domain's own Definitions (tests, the demo's daemon emulation) hold the same
# job with only its ingest assets, and the code location's holds all four.
HOT_PATH_DOWNSTREAM = (CURATED_CASES, ENRICHED_CASES)


def hot_path_executor(environment: str) -> dg.ExecutorDefinition | None:
    """The executor of `ingest_events_job`: in-process locally, the code location's own in production.

    Locally, one process runs ingest, checks, curation and enrichment one after the other:
    the multiprocess executor starts a process per step, each importing the code location
    again and the enrichment step sentence-transformers (about 10 s), which measured slower
    than the whole in-process run (benchmarks/near_real_time.py). In `prod` the job keeps
    the Definitions' `k8s_job_executor` (None here), so each step gets its own pod and the
    enrichment step its GPU.
    """
    return None if environment == "prod" else dg.in_process_executor


# Partitioned by daily_partitions through its selection; a run covers a key range.
ingest_events_job = dg.define_asset_job(
    "ingest_events_job",
    selection=dg.AssetSelection.assets(ingest_kafka_batch) | dg.AssetSelection.from_string(
        " or ".join(f'key:"{key.to_user_string()}"' for key in HOT_PATH_DOWNSTREAM)),
    executor_def=hot_path_executor(current_environment()),
    description="One Kafka batch, raw to enriched in one run: its valid events into the raw/events partitions "
                "of its date range, its invalid messages into raw/rejected_events, then curated/cases and "
                "enriched/cases of the same dates (only the new cases; published to cases.enriched). The "
                "blocking checks of raw/events and curated/cases stop enrichment in the same run.",
)

ingest_rejected_events_job = dg.define_asset_job(
    "ingest_rejected_events_job",
    selection=dg.AssetSelection.assets(REJECTED_EVENTS),
    description="Write the invalid messages of Kafka offset ranges to raw/rejected_events only (replays; the "
                "sensor uses it for a batch without a single dated message).",
)
