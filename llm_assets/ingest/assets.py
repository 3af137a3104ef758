"""The ingest assets: `raw/events` (valid events per UTC day) and `raw/rejected_events` (dead letter).

Both are materialized by runs the `kafka_events_sensor` requests with Kafka offset ranges
in run config (never payloads). A run re-reads exactly those ranges, validates every
message with the pure contract (`contract.py`) and MERGEs into Delta, so a duplicate
delivery is one row and a re-run writes nothing.
"""

from collections import Counter
from datetime import date, datetime, timezone

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets.ingest import contract
from llm_assets.ingest.contract import InvalidEvent, PartitionWindow, ValidEvent
from llm_assets.partitions import daily_partitions
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource, OffsetRange
from llm_assets.settings import EVENTS_TOPIC

RAW_EVENTS_KEY = "raw/events"
REJECTED_EVENTS_KEY = "raw/rejected_events"
PREVIEW_ROWS = 5


class KafkaOffsetRange(dg.Config):
    partition: int = Field(description="Kafka partition")
    start: int = Field(description="first offset (inclusive)")
    end: int = Field(description="last offset (exclusive)")


class KafkaBatchConfig(dg.Config):
    """The offset ranges of one sensor batch; the run re-reads exactly these."""

    topic: str = Field(default=EVENTS_TOPIC)
    ranges: list[KafkaOffsetRange] = Field(description="offset ranges to read, one per partition")
    max_payload_bytes: int = Field(default=contract.DEFAULT_MAX_PAYLOAD_BYTES,
                                   description="larger message values are rejected")
    last_partition_date: str | None = Field(
        default=None, description="the last event_date accepted, as the sensor saw it (today's last partition "
                                  "when unset); fixed per batch so the sensor and every re-run agree")


def current_partition_window(last_partition_date: str | None = None) -> PartitionWindow:
    """The dates that have a `daily_partitions` key (the last one moves every day)."""
    last = last_partition_date or daily_partitions.get_last_partition_key()
    return PartitionWindow(first=daily_partitions.start.date(),
                           last=date.fromisoformat(last) if last else daily_partitions.start.date())


def _read_and_validate(kafka: KafkaResource, config: KafkaBatchConfig):
    """Yield `(record, ValidEvent | InvalidEvent)` for every message of the configured ranges."""
    window = current_partition_window(config.last_partition_date)
    ranges = [OffsetRange(r.partition, r.start, r.end) for r in config.ranges]
    for batch in kafka.iter_range_batches(config.topic, ranges):
        for record in batch:
            yield record, contract.validate_event(record.value, max_payload_bytes=config.max_payload_bytes,
                                                  window=window)


def _ranges_md(config: KafkaBatchConfig) -> str:
    return ", ".join(f"p{r.partition}:{r.start}-{r.end}" for r in config.ranges)


def _preview(df: pl.DataFrame, columns: list[str]) -> dg.MetadataValue:
    head = df.select(columns).head(PREVIEW_ROWS)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in head.iter_rows():
        cells = [str(v).replace("|", "\\|").replace("\n", " ")[:80] if v is not None else "" for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


@dg.asset(
    key=["raw", "events"],
    partitions_def=daily_partitions,
    kinds={"kafka", "delta"},
    group_name="ingest",
)
def raw_events(context: dg.AssetExecutionContext, config: KafkaBatchConfig, kafka: KafkaResource,
               delta: DeltaLakeStorage) -> dg.MaterializeResult:
    """Valid `events.raw` events of one UTC day (`event_date` from `event_ts`), one row per `event_id`.

    Re-reads the run's Kafka offset ranges, keeps the valid messages of this partition's
    date and MERGEs them on `event_id` (partition column in the predicate). Unknown fields
    are kept as JSON in `extra`; invalid messages go to `raw/rejected_events`.
    """
    day = context.partition_key
    now = datetime.now(timezone.utc)
    read = other_dates = invalid = 0
    rows = []
    for record, outcome in _read_and_validate(kafka, config):
        read += 1
        if isinstance(outcome, InvalidEvent):
            invalid += 1
        elif outcome.event_date != day:
            other_dates += 1
        else:
            rows.append(contract.event_values(outcome, topic=record.topic, partition=record.partition,
                                              offset=record.offset, ingested_at=now))
    incoming = contract.events_frame(rows).unique(subset=["event_id"], keep="last", maintain_order=True)
    stored = pl.DataFrame(schema=contract.RAW_EVENTS_SCHEMA)
    if not incoming.is_empty() and delta.exists(RAW_EVENTS_KEY):
        stored = (pl.scan_delta(delta.uri(RAW_EVENTS_KEY), storage_options=dict(delta.storage_options) or None)
                  .filter((pl.col("event_date") == day) & pl.col("event_id").is_in(incoming["event_id"].implode()))
                  .collect())
    to_write = contract.new_or_changed_events(incoming, stored)
    counts = delta.merge(RAW_EVENTS_KEY, to_write, ["event_id"], partition_column="event_date", partition_value=day)
    context.log.info(f"{day}: read {read}, {incoming.height} valid for this day, "
                     f"{counts['inserted']} inserted, {counts['updated']} updated")
    return dg.MaterializeResult(metadata={
        "kafka_topic": config.topic,
        "kafka_ranges": _ranges_md(config),
        "messages_read": read,
        "valid_for_partition": incoming.height,
        "valid_other_dates": other_dates,
        "invalid": invalid,
        "rows_inserted": counts["inserted"],
        "rows_updated": counts["updated"],
        "rows_unchanged": incoming.height - to_write.height,
        "partition_row_count": delta.count(RAW_EVENTS_KEY, partition_column="event_date", partition_value=day),
        "preview": _preview(incoming, ["event_id", "event_ts", "source_system", "partner_id", "payload_raw"]),
    })


@dg.asset(
    key=["raw", "rejected_events"],
    kinds={"kafka", "delta"},
    group_name="ingest",
)
def raw_rejected_events(context: dg.AssetExecutionContext, config: KafkaBatchConfig, kafka: KafkaResource,
                        delta: DeltaLakeStorage) -> dg.MaterializeResult:
    """Dead letter of `events.raw`: every message that breaks the contract, with the reason.

    One row per (topic, partition, offset) with the key, the raw value (base64) and the
    error; MERGEd on that key and never rewritten, so re-runs are idempotent.
    """
    now = datetime.now(timezone.utc)
    read = 0
    rows = []
    for record, outcome in _read_and_validate(kafka, config):
        read += 1
        if isinstance(outcome, ValidEvent):
            continue
        rows.append(contract.rejected_row(topic=record.topic, partition=record.partition, offset=record.offset,
                                          key=record.key, value=record.value, reason=outcome.reason, seen_at=now))
    incoming = contract.rejected_frame(rows)
    stored_keys = pl.DataFrame(schema={k: contract.REJECTED_EVENTS_SCHEMA[k] for k in contract.REJECTED_KEY_COLUMNS})
    if not incoming.is_empty() and delta.exists(REJECTED_EVENTS_KEY):
        in_ranges = pl.lit(False)
        for r in config.ranges:
            in_ranges = in_ranges | ((pl.col("partition") == r.partition) & pl.col("offset").is_between(
                r.start, r.end, closed="left"))
        stored_keys = (pl.scan_delta(delta.uri(REJECTED_EVENTS_KEY),
                                     storage_options=dict(delta.storage_options) or None)
                       .filter((pl.col("topic") == config.topic) & in_ranges)
                       .select(list(contract.REJECTED_KEY_COLUMNS)).collect())
    to_write = contract.unseen_rejections(incoming, stored_keys)
    counts = delta.merge(REJECTED_EVENTS_KEY, to_write, list(contract.REJECTED_KEY_COLUMNS))
    by_reason = Counter(r["error"] for r in rows)
    context.log.info(f"read {read}, {len(rows)} rejected, {counts['inserted']} new in the dead letter")
    reasons_md = "| reason | messages |\n|---|---|\n" + "\n".join(
        f"| {reason.replace('|', '/')[:120]} | {n} |" for reason, n in by_reason.most_common(20))
    return dg.MaterializeResult(metadata={
        "kafka_topic": config.topic,
        "kafka_ranges": _ranges_md(config),
        "messages_read": read,
        "rejected": len(rows),
        "rows_inserted": counts["inserted"],
        "rows_already_present": incoming.height - to_write.height,
        "table_row_count": delta.count(REJECTED_EVENTS_KEY),
        "reasons": dg.MetadataValue.md(reasons_md),
    })


ingest_events_job = dg.define_asset_job(
    "ingest_events_job",
    selection=dg.AssetSelection.assets(raw_events),
    partitions_def=daily_partitions,
    description="Write one batch of Kafka offset ranges into one daily partition of raw/events.",
)

ingest_rejected_events_job = dg.define_asset_job(
    "ingest_rejected_events_job",
    selection=dg.AssetSelection.assets(raw_rejected_events),
    description="Write the invalid messages of one batch of Kafka offset ranges to raw/rejected_events.",
)
