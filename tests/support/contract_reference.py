"""The `events.raw` contract one message at a time, for tests and benchmarks.

`validate_event` is `contract.validate_values` of one value (the same decision and wording),
`event_row` the `raw/events` row of a valid one; the assets only ever validate whole batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llm_assets.ingest.contract import DEFAULT_MAX_PAYLOAD_BYTES, PartitionWindow, validate_values


@dataclass(frozen=True)
class ValidEvent:
    event_date: str
    fields: dict[str, Any]  # event_id ... payload_raw, event_ts as a UTC datetime, extra


@dataclass(frozen=True)
class InvalidEvent:
    reason: str


def validate_event(value: bytes | None, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                   window: PartitionWindow | None = None) -> ValidEvent | InvalidEvent:
    """Check one message value against the contract (`validate_values` of one value)."""
    checked = validate_values([value], max_payload_bytes=max_payload_bytes, window=window)
    if checked.rejected.height:
        return InvalidEvent(checked.rejected["reason"][0])
    fields = checked.events.drop("position", "event_date").row(0, named=True)
    return ValidEvent(checked.events["event_date"][0], fields)


def event_row(event: ValidEvent, *, topic: str, partition: int, offset: int, ingested_at: datetime) -> dict:
    """The `raw/events` row of a valid message (`contract.events_frame` makes a frame of them)."""
    return {**event.fields, "event_date": event.event_date, "kafka_topic": topic, "kafka_partition": partition,
            "kafka_offset": offset, "ingested_at": ingested_at}
