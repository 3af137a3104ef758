"""The `events.raw` message contract: message values in, `raw/events` rows or reasons out.

Pure (pydantic and polars, no Dagster). `validate_values` is the one decision: the sensor
runs it to learn each message's `event_date`, the run runs it again to write rows, so both
always agree; `validate_event` is the same decision for one value (tests, helpers).
It works on a whole batch: the per-message part is a JSON parse and type checks, the
timestamp rules run vectorized in polars (about 10x faster than per-message datetimes).

A valid value is a JSON object with string fields `event_id` (non-empty), `source_system`,
`event_ts` (RFC 3339 with a zone), `partner_id`, `entity_id`, `payload_raw`; unknown
fields are kept as a JSON string in `extra`, never an error. Everything else is rejected
with a reason a person can act on.
"""

from __future__ import annotations

import base64
import gc
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable, Iterator, Sequence

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json

DEFAULT_MAX_PAYLOAD_BYTES = 16_384
REQUIRED_FIELDS = ("event_id", "source_system", "event_ts", "partner_id", "entity_id", "payload_raw")

# RFC 3339 date-time: a full time and an explicit zone (Z or +hh:mm); fractions allowed.
# ASCII digits only, whole string (the same pattern runs in Python and in polars' Rust regex).
_RFC3339_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
_RFC3339 = re.compile(_RFC3339_PATTERN.replace("$", r"\Z"))
_EMPTY_VALUE = "empty value (null or zero-length message)"

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


EVENT_COLUMNS = ("event_id", "source_system", "event_ts", "event_date", "partner_id", "entity_id", "payload_raw",
                 "extra")


@dataclass
class ValidatedValues:
    """`validate_values` of one batch.

    `events`: the valid messages, one row each in input order, with `EVENT_COLUMNS` and
    `position` (the message's index in the input); `invalid`: `(index, reason)` of the others.
    """

    events: pl.DataFrame
    invalid: list[tuple[int, str]]

    def dates_by_index(self, n: int) -> list[str | None]:
        """The `event_date` of each of the `n` input values, None where invalid."""
        dates: list[str | None] = [None] * n
        for i, day in zip(self.events["position"].to_list(), self.events["event_date"].to_list()):
            dates[i] = day
        return dates


@contextmanager
def gc_paused() -> Iterator[None]:
    """Bulk reads build 100k of small acyclic objects (messages, dicts, tuples): each one would trigger
    cyclic-GC passes over the whole (large) heap for nothing; reference counting frees them anyway."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _model_reason(value: bytes) -> str:
    """Why a value that failed the fast checks breaks the contract (the pydantic model explains)."""
    try:
        _RawEventValue.model_validate_json(value)
    except ValidationError as exc:
        return _describe(exc)
    return "does not meet the events.raw contract"  # unreachable: the fast checks mirror the model


_AS_OFFSET = "%Y-%m-%dT%H:%M:%S%.f%:z"


def _utc_timestamp(text: pl.Expr) -> pl.Expr:
    """UTC datetime of the common RFC 3339 spelling (`T`, `Z` or an offset), null otherwise."""
    return text.str.replace("Z", "+00:00", literal=True).str.to_datetime(
        _AS_OFFSET, time_zone="UTC", time_unit="us", strict=False)


def _utc_timestamp_any_spelling(text: pl.Expr) -> pl.Expr:
    """Also the rarer spellings: lower-case `z`, a `t` or a space between date and time (slower)."""
    return _utc_timestamp(text.str.replace(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]", "${1}T")
                          .str.replace(r"[Zz]$", "Z"))


def _with_timestamp_checks(frame: pl.DataFrame, window: PartitionWindow | None) -> pl.DataFrame:
    """`frame` (an `event_ts` text column) plus `ts` (UTC datetime) and `bad` (breaks the rules)."""
    ts = frame.select(_utc_timestamp(pl.col("event_ts"))).to_series()
    retry = ts.is_null() & frame["event_ts"].is_not_null()
    if retry.any():  # only the few unparsed rows pay for the slower spellings
        idx = retry.arg_true()
        ts = ts.scatter(idx, frame.select(_utc_timestamp_any_spelling(pl.col("event_ts").gather(idx))).to_series())
    frame = frame.with_columns(ts.alias("ts"))
    text, day = pl.col("event_ts"), pl.col("ts").dt.date()
    # chrono reads second 60 as a leap second; RFC 3339 allows it but Python and Delta readers do not.
    bad = pl.col("ts").is_null() | ~text.str.contains(_RFC3339_PATTERN) | (text.str.slice(17, 2) == "60")
    if window is not None:
        bad = bad | (day < window.first) | (day > window.last)
    return frame.with_columns(bad.fill_null(True).alias("bad"))


def _timestamp_reason(text: str) -> str:
    try:
        parse_event_ts(text)
    except ValueError as exc:
        reason = str(exc)
        return reason if reason.startswith("event_ts") else f"event_ts {text[:60]!r} is not a valid timestamp: {reason}"
    return f"event_ts {text[:60]!r} is not a valid RFC 3339 timestamp"


def validate_values(values: Sequence[bytes | None], *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                    window: PartitionWindow | None = None, dates_only: bool = False) -> ValidatedValues:
    """Check a batch of message values against the contract (see the module docstring).

    `dates_only` (the sensor): the same verdicts, but `events` has only `position`,
    `event_ts` and `event_date` (the other columns are not built).
    """
    invalid: list[tuple[int, str]] = []
    positions: list[int] = []
    rows: list[tuple] = []
    with gc_paused():
        for i, value in enumerate(values):
            if not value:
                invalid.append((i, _EMPTY_VALUE))
                continue
            if len(value) > max_payload_bytes:
                invalid.append((i, f"payload of {len(value)} bytes is over the {max_payload_bytes}-byte limit"))
                continue
            if b"\x00" in value:
                invalid.append((i, "value contains NUL bytes"))
                continue
            # Same parser and strict rules as `_RawEventValue`, without building a model per message
            # (unrolled: this loop is most of the ingest's CPU time).
            try:
                data = from_json(value, cache_strings="keys")  # values are rarely repeated
            except ValueError:
                data = None
            if type(data) is dict:
                event_id, source_system, event_ts = data.pop("event_id", None), data.pop("source_system", None), \
                    data.pop("event_ts", None)
                partner_id, entity_id, payload_raw = data.pop("partner_id", None), data.pop("entity_id", None), \
                    data.pop("payload_raw", None)
                if (event_id and type(event_id) is str and type(source_system) is str and type(event_ts) is str
                        and type(partner_id) is str and type(entity_id) is str and type(payload_raw) is str):
                    positions.append(i)
                    rows.append((event_id, source_system, event_ts, partner_id, entity_id, payload_raw, data or None))
                    continue
            invalid.append((i, _model_reason(value)))

    if dates_only:
        frame = pl.DataFrame({"position": pl.Series(positions, dtype=pl.UInt32),
                              "event_ts": pl.Series([r[2] for r in rows], dtype=pl.String)})
    else:
        columns = [[r[k] for r in rows] for k in range(len(REQUIRED_FIELDS) + 1)]  # faster than zip(*rows)
        frame = pl.DataFrame({
            "position": pl.Series(positions, dtype=pl.UInt32),
            **{name: pl.Series(name, col, dtype=pl.String) for name, col in zip(REQUIRED_FIELDS, columns)},
            "extra": pl.Series([json.dumps(e, sort_keys=True) if e else None for e in columns[-1]], dtype=pl.String)})
    checked = _with_timestamp_checks(frame, window).lazy()
    day = pl.col("ts").dt.date()
    columns = ("event_ts", "event_date") if dates_only else EVENT_COLUMNS
    events, rejected = pl.collect_all([
        checked.filter(~pl.col("bad")).select("position", *(
            pl.col("ts").alias("event_ts") if c == "event_ts" else
            day.dt.strftime("%Y-%m-%d").alias("event_date") if c == "event_date" else pl.col(c) for c in columns)),
        checked.filter(pl.col("bad")).select("position", "event_ts", "ts"),
    ])
    if rejected.height:
        for i, text, ts in rejected.iter_rows():
            if ts is None or not _RFC3339.match(text) or text[17:19] == "60":
                invalid.append((i, _timestamp_reason(text)))
            else:
                invalid.append((i, window.reason_outside(ts.date())))
        invalid.sort()
    return ValidatedValues(events=events, invalid=invalid)


# The top-level `event_ts` string of a value without backslashes (see `event_dates`).
_EVENT_TS_VALUE = r'"event_ts"[ \t\n\r]*:[ \t\n\r]*"([^"]*)"'


def _utf8_or_none(value: bytes | None) -> str | None:
    try:
        return value.decode("utf-8") if value is not None else None
    except UnicodeDecodeError:
        return None


def event_dates(values: Sequence[bytes | None], *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                window: PartitionWindow | None = None) -> list[str | None]:
    """The `event_date` of each value: for every value `validate_values` accepts, the same date.

    The sensor only needs dates, so the common value is not parsed, only scanned (vectorized):
    without a backslash in it (so no escape can hide or fake a key) and with exactly one
    `"event_ts"` token followed by a colon, that token is the top-level key of any valid JSON
    object (a `"` in valid JSON starts or ends a string, and a string followed by `:` is a
    key), and the string after it is the value the parser reads. Other values go through
    `validate_values`. A value `validate_values` rejects may still get a date here (the plan
    then covers a date that gets no row: harmless); None means certainly invalid.
    """
    raw = pl.Series("value", values, dtype=pl.Binary)
    try:
        text = raw.cast(pl.String)
    except pl.exceptions.ComputeError:  # some value is not UTF-8: scan the others, parse those
        text = pl.Series("value", [_utf8_or_none(v) for v in values], dtype=pl.String)
    size = raw.bin.size()
    scanned = pl.DataFrame({"text": text, "size": size}).select(
        unreadable=pl.col("size").is_null() | (pl.col("size") == 0) | (pl.col("size") > max_payload_bytes)
        | raw.bin.contains(b"\x00").fill_null(True),
        simple=(~pl.col("text").str.contains("\\", literal=True)
                & (pl.col("text").str.count_matches('"event_ts"', literal=True) == 1)).fill_null(False),
        event_ts=pl.col("text").str.extract(_EVENT_TS_VALUE, 1),
    ).with_row_index("position")
    fast = scanned.filter(~pl.col("unreadable") & pl.col("simple") & pl.col("event_ts").is_not_null())
    slow = scanned.filter(~pl.col("unreadable") & ~(pl.col("simple") & pl.col("event_ts").is_not_null()))
    dates: list[str | None] = [None] * len(values)
    if fast.height:
        checked = _with_timestamp_checks(fast.select("position", "event_ts"), window)
        days = checked.select(pl.when(~pl.col("bad")).then(pl.col("ts").dt.strftime("%Y-%m-%d"))).to_series()
        for i, day in zip(checked["position"].to_list(), days.to_list()):
            dates[i] = day
    if slow.height:
        positions = slow["position"].to_list()
        parsed = validate_values([values[i] for i in positions], max_payload_bytes=max_payload_bytes,
                                 window=window, dates_only=True)
        for k, day in zip(parsed.events["position"].to_list(), parsed.events["event_date"].to_list()):
            dates[positions[k]] = day
    return dates


def validate_event(value: bytes | None, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                   window: PartitionWindow | None = None) -> ValidEvent | InvalidEvent:
    """Check one message value against the contract (`validate_values` of one value)."""
    checked = validate_values([value], max_payload_bytes=max_payload_bytes, window=window)
    if checked.invalid:
        return InvalidEvent(checked.invalid[0][1])
    fields = checked.events.drop("position", "event_date").row(0, named=True)
    return ValidEvent(checked.events["event_date"][0], fields)


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


def events_frame(rows: Iterable[dict]) -> pl.DataFrame:
    """A `raw/events` frame from `event_row` dicts."""
    return pl.DataFrame(list(rows), schema=RAW_EVENTS_SCHEMA)


def valid_events_frame(checked: ValidatedValues, *, topic: str, partitions: Sequence[int], offsets: Sequence[int],
                       ingested_at: datetime) -> pl.DataFrame:
    """The `raw/events` rows of a validated batch; `partitions` and `offsets` are per input value."""
    idx = checked.events["position"]
    return checked.events.select(
        *EVENT_COLUMNS,
        pl.lit(topic, dtype=pl.String).alias("kafka_topic"),
        pl.Series("kafka_partition", partitions, dtype=pl.Int32).gather(idx),
        pl.Series("kafka_offset", offsets, dtype=pl.Int64).gather(idx),
        pl.lit(ingested_at, dtype=pl.Datetime("us", "UTC")).alias("ingested_at"),
    ).cast(RAW_EVENTS_SCHEMA)


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
