"""The `events.raw` message contract: one message value in, a `raw/events` row or a reason out.

Pure (pydantic and polars, no Dagster): the sensor runs it to find each message's
`event_date`, the runs run it again to write rows, and the tests call it directly.

A valid value is a JSON object with string fields `event_id` (non-empty), `source_system`,
`event_ts` (RFC 3339 with a zone), `partner_id`, `entity_id`, `payload_raw`; unknown
fields are kept as a JSON string in `extra`, never an error. Everything else is rejected
with a reason a person can act on.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json

DEFAULT_MAX_PAYLOAD_BYTES = 16_384
REQUIRED_FIELDS = ("event_id", "source_system", "event_ts", "partner_id", "entity_id", "payload_raw")

# RFC 3339 date-time: a full time and an explicit zone (Z or +hh:mm); fractions allowed.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

RAW_EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(), "source_system": pl.String(), "event_ts": pl.Datetime("us", "UTC"),
    "event_date": pl.String(), "partner_id": pl.String(), "entity_id": pl.String(), "payload_raw": pl.String(),
    "extra": pl.String(), "kafka_topic": pl.String(), "kafka_partition": pl.Int32(), "kafka_offset": pl.Int64(),
    "ingested_at": pl.Datetime("us", "UTC"),
}
# What the event says (as opposed to where and when we read it): a re-delivery with the
# same content is not a change.
EVENT_CONTENT_COLUMNS = ("event_id", "source_system", "event_ts", "event_date", "partner_id", "entity_id",
                         "payload_raw", "extra")

REJECTED_EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "topic": pl.String(), "partition": pl.Int32(), "offset": pl.Int64(), "key": pl.String(),
    "value_b64": pl.String(), "error": pl.String(), "seen_at": pl.Datetime("us", "UTC"),
}
REJECTED_KEY_COLUMNS = ("topic", "partition", "offset")


class _RawEventValue(BaseModel):
    # strict: a number where a string is expected is a producer bug, not something to coerce.
    model_config = ConfigDict(strict=True, extra="allow")

    event_id: str = Field(min_length=1)
    source_system: str
    event_ts: str
    partner_id: str
    entity_id: str
    payload_raw: str


@dataclass(frozen=True)
class PartitionWindow:
    """The first and last `event_date` that have a daily partition (inclusive)."""

    first: date
    last: date

    def reason_outside(self, day: date) -> str | None:
        if day < self.first:
            return f"event_date {day} is before the first daily partition {self.first}"
        if day > self.last:
            return f"event_date {day} is after the last daily partition {self.last} (event_ts in the future?)"
        return None


@dataclass(frozen=True)
class ValidEvent:
    event_date: str
    fields: dict[str, Any]  # event_id ... payload_raw, event_ts as a UTC datetime, extra


@dataclass(frozen=True)
class InvalidEvent:
    reason: str


def parse_event_ts(text: str) -> datetime:
    """An RFC 3339 timestamp with a zone, as an aware UTC datetime; ValueError otherwise."""
    if not _RFC3339.match(text):
        raise ValueError(f"event_ts {text[:60]!r} is not an RFC 3339 timestamp with a zone")
    return datetime.fromisoformat(text.replace("z", "Z")).astimezone(timezone.utc)


def _describe(error: ValidationError) -> str:
    problems = error.errors(include_url=False)
    kinds = {p["type"] for p in problems}
    if "json_invalid" in kinds:
        return f"not JSON: {problems[0]['msg'].removeprefix('Invalid JSON: ')}"
    if "model_type" in kinds:
        return "not a JSON object"
    missing = [str(p["loc"][0]) for p in problems if p["type"] == "missing"]
    parts = [f"missing required field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"] if missing else []
    for p in problems:
        if p["type"] == "missing":
            continue
        name = ".".join(str(x) for x in p["loc"])
        if p["type"] == "string_too_short":
            parts.append(f"{name} must not be empty")
        else:
            parts.append(f"wrong type: {name} must be a string, got {type(p['input']).__name__}")
    return "; ".join(parts)


def validate_event(value: bytes | None, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                   window: PartitionWindow | None = None) -> ValidEvent | InvalidEvent:
    """Check one message value against the contract."""
    if not value:
        return InvalidEvent("empty value (null or zero-length message)")
    if len(value) > max_payload_bytes:
        return InvalidEvent(f"payload of {len(value)} bytes is over the {max_payload_bytes}-byte limit")
    if b"\x00" in value:
        return InvalidEvent("value contains NUL bytes")
    fields = _fast_parse(value)
    if fields is None:
        # The pydantic model is the contract; it also explains what is wrong.
        try:
            event = _RawEventValue.model_validate_json(value)
        except ValidationError as exc:
            return InvalidEvent(_describe(exc))
        fields = {**event.model_dump(exclude=set(event.model_extra or ())), "extra": event.model_extra or None}
    try:
        ts = parse_event_ts(fields["event_ts"])
    except ValueError as exc:
        return InvalidEvent(str(exc))
    day = ts.date()
    if window is not None and not (window.first <= day <= window.last):
        return InvalidEvent(window.reason_outside(day))
    extra = fields["extra"]
    fields["extra"] = json.dumps(extra, sort_keys=True) if extra else None
    fields["event_ts"] = ts
    return ValidEvent(day.isoformat(), fields)


def _fast_parse(value: bytes) -> dict[str, Any] | None:
    """The fields of a value that obviously meets `_RawEventValue`, else None (then pydantic decides).

    Same parser as pydantic (`pydantic_core.from_json`) and the same strict rules, about 4x
    faster than building the model; every doubtful case goes to the model.
    """
    try:
        data = from_json(value)
    except ValueError:
        return None
    if type(data) is not dict:
        return None
    fields: dict[str, Any] = {}
    for name in REQUIRED_FIELDS:
        v = data.pop(name, None)
        if type(v) is not str:
            return None
        fields[name] = v
    if not fields["event_id"]:
        return None
    fields["extra"] = data or None
    return fields


def event_row(event: ValidEvent, *, topic: str, partition: int, offset: int, ingested_at: datetime) -> dict:
    """The `raw/events` row of a valid message."""
    return {**event.fields, "event_date": event.event_date, "kafka_topic": topic, "kafka_partition": partition,
            "kafka_offset": offset, "ingested_at": ingested_at}


def rejected_row(*, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 reason: str, seen_at: datetime) -> dict:
    """The `raw/rejected_events` row of an invalid message (the value kept byte for byte)."""
    return {"topic": topic, "partition": partition, "offset": offset,
            "key": key.decode("utf-8", "backslashreplace") if key is not None else None,
            "value_b64": base64.b64encode(value).decode("ascii") if value is not None else None,
            "error": reason, "seen_at": seen_at}


def event_values(event: ValidEvent, *, topic: str, partition: int, offset: int, ingested_at: datetime) -> tuple:
    """`event_row` as a tuple in `RAW_EVENTS_SCHEMA` order (cheaper for large batches)."""
    f = event.fields
    return (f["event_id"], f["source_system"], f["event_ts"], event.event_date, f["partner_id"], f["entity_id"],
            f["payload_raw"], f["extra"], topic, partition, offset, ingested_at)


def events_frame(rows: Iterable[dict | tuple]) -> pl.DataFrame:
    """A `raw/events` frame from `event_row` dicts or `event_values` tuples."""
    rows = list(rows)
    if rows and isinstance(rows[0], tuple):
        return pl.DataFrame(rows, schema=RAW_EVENTS_SCHEMA, orient="row")
    return pl.DataFrame(rows, schema=RAW_EVENTS_SCHEMA)


def rejected_frame(rows: Iterable[dict]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=REJECTED_EVENTS_SCHEMA)


def new_or_changed_events(incoming: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """The incoming rows whose content is not already stored (so a re-run writes nothing)."""
    if stored.is_empty() or incoming.is_empty():
        return incoming
    cols = list(EVENT_CONTENT_COLUMNS)
    return incoming.join(stored.select(cols).unique(), on=cols, how="anti", nulls_equal=True)


def unseen_rejections(incoming: pl.DataFrame, stored_keys: pl.DataFrame) -> pl.DataFrame:
    """The incoming dead letters whose (topic, partition, offset) is not stored yet."""
    if stored_keys.is_empty() or incoming.is_empty():
        return incoming
    return incoming.join(stored_keys.select(list(REJECTED_KEY_COLUMNS)).unique(),
                         on=list(REJECTED_KEY_COLUMNS), how="anti")
