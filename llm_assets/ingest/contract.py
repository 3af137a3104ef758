"""The `events.raw` message contract: message values in, `raw/events` rows or reasons out.

Pure (polars and pydantic-core, no Dagster). `validate_values` is the one decision and the
one wording of reasons, for a whole batch at once: the sensor runs it to learn each
message's `event_date`, the run runs it again to write rows, so both always agree.

A valid value is a JSON object with string fields `event_id` (non-empty), `source_system`,
`event_ts` (RFC 3339 with a zone), `partner_id`, `entity_id`, `payload_raw`, under the names
the domain pack gives them (`event:` in its `domain.yaml`, e.g. `ticket_id`, `opened_at`,
`description`; `EventNames`); rows always use these canonical names. Unknown fields are kept as
a JSON string in `extra` (all of them, or those the pack lists in `keep_extra`), never an error.
Everything else is rejected with a reason a person can act on, in the producer's field names.

How it keeps the broker's pace: the size, NUL-byte and UTF-8 checks are vectorized. The
common shape, an object of exactly the six required keys in the order this batch's producer
writes them with string values, is proven by one regex over the batch (it is then valid
JSON, and no key can be duplicated or hidden), which also captures the fields when they hold
no escape; the same shape with escapes is proven by a second regex and decoded by polars'
JSON reader. Any other value (nested or non-string fields, extra or duplicate keys, surrogate
escapes) is parsed on its own by jiter, pydantic's JSON parser (duplicate keys: the last one
wins), and worded; `parse_value` is that exact path, the reference of the others. The
timestamp rules run vectorized over every candidate. The sensor asks for `DATE_COLUMNS`: the
same proofs, without capturing the other fields.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Iterable, Iterator, Sequence

import polars as pl
from pydantic_core import from_json

from llm_assets.domain import DomainPack, current_pack

DEFAULT_MAX_PAYLOAD_BYTES = 16_384
REQUIRED_FIELDS = ("event_id", "source_system", "event_ts", "partner_id", "entity_id", "payload_raw")


@dataclass(frozen=True)
class EventNames:
    """The JSON field names of the six required fields (in `REQUIRED_FIELDS` order) and the extra
    fields kept (None: every other field)."""

    json: tuple[str, ...] = REQUIRED_FIELDS
    keep_extra: tuple[str, ...] | None = None

    @property
    def of(self) -> dict[str, str]:
        """canonical name -> JSON name."""
        return dict(zip(REQUIRED_FIELDS, self.json))

    @classmethod
    def from_pack(cls, pack: DomainPack) -> "EventNames":
        names = pack.event.json_names
        keep = pack.event.keep_extra
        return cls(tuple(names[c] for c in REQUIRED_FIELDS), tuple(keep) if keep is not None else None)


def current_names() -> EventNames:
    """The event field names of the domain pack in use."""
    return EventNames.from_pack(current_pack())


def current_max_payload_bytes(configured: int = 0) -> int:
    """The payload limit: `configured` when set (> 0), else the domain pack's."""
    return configured if configured > 0 else current_pack().event.max_payload_bytes

# RFC 3339 date-time: a full time and an explicit zone (Z or +hh:mm); fractions allowed.
# ASCII digits only, whole string (the same pattern runs in Python and in polars' Rust regex).
_RFC3339_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
_RFC3339 = re.compile(_RFC3339_PATTERN.replace("$", r"\Z"))
EMPTY_VALUE = "empty value (null or zero-length message)"
NOT_UTF8 = "not JSON: the value is not valid UTF-8"

# The common shape: a JSON object of exactly the six required keys, in one order, with string
# values. JSON whitespace is exactly these four characters; control characters must be escaped.
_WS = r"[ \t\n\r]*"
# No escape at all: the text between the quotes is the value (event_id: not empty).
_PLAIN = r'"[^"\\\x00-\x1f]*"'
_PLAIN_EVENT_ID = r'"[^"\\\x00-\x1f]+"'
_PLAIN_CAPTURE = r'"(?P<NAME>[^"\\\x00-\x1f]*)"'
_PLAIN_EVENT_ID_CAPTURE = r'"(?P<NAME>[^"\\\x00-\x1f]+)"'
_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'  # the simple escapes too
_STRING_EVENT_ID = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})+"'
# Surrogate escapes: jiter and polars read them differently, so such values take the exact path.
_SURROGATE_ESCAPE = r"\\u[dD][89a-fA-F]"
# C0 control characters but tab, newline and carriage return, and DEL: never in a text field.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CONTROL_RE = re.compile(_CONTROL)
_EXTRA_JSON = json.JSONEncoder(sort_keys=True)  # `json.dumps(extra, sort_keys=True)`, without a new encoder per call


def _object_pattern(order: Sequence[str], value: str, event_id: str, names: EventNames = EventNames()) -> str:
    """A whole value that is an object of exactly the keys of `order` (JSON names), in that order, with
    these values (`NAME` in a value pattern stands for the key's canonical name, e.g. for a named capture)."""
    canonical = {v: k for k, v in names.of.items()}
    members = f"{_WS},{_WS}".join(
        f'"{re.escape(name)}"{_WS}:{_WS}'
        f'{(event_id if canonical[name] == "event_id" else value).replace("NAME", canonical[name])}' for name in order)
    return rf"^{_WS}\{{{_WS}{members}{_WS}\}}{_WS}$"


def _key_order(sample: Sequence[str], names: EventNames = EventNames()) -> tuple[str, ...]:
    """The order in which this batch's producers write the required keys (a producer keeps one order)."""
    for text in sample:
        try:
            data = from_json(text)
        except ValueError:
            continue
        if type(data) is dict and sorted(data) == sorted(names.json):
            return tuple(data)
    return names.json


RAW_EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(), "source_system": pl.String(), "event_ts": pl.Datetime("us", "UTC"),
    "event_date": pl.String(), "partner_id": pl.String(), "entity_id": pl.String(), "payload_raw": pl.String(),
    "extra": pl.String(), "kafka_topic": pl.String(), "kafka_partition": pl.Int32(), "kafka_offset": pl.Int64(),
    "ingested_at": pl.Datetime("us", "UTC"),
    # The message's key as sent (the contract says key = event_id; another key is accepted and kept
    # here, counted as `key_mismatches` on the materialization, so a producer's bug stays visible).
    "kafka_key": pl.String(),
}
EVENT_COLUMNS = ("event_id", "source_system", "event_ts", "event_date", "partner_id", "entity_id", "payload_raw",
                 "extra")
# What the event says (as opposed to where and when we read it): a re-delivery with the
# same content is not a change.
EVENT_CONTENT_COLUMNS = EVENT_COLUMNS
DATE_COLUMNS = ("event_ts", "event_date")  # what the sensor needs

REJECTED_EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "topic": pl.String(), "topic_id": pl.String(), "partition": pl.Int32(), "offset": pl.Int64(),
    "message_sha256": pl.String(), "key": pl.String(), "value_b64": pl.String(), "error": pl.String(),
    "seen_at": pl.Datetime("us", "UTC"),
}
# Which log, where in it and what it said: a replay of the same message is the same dead letter; a
# message at an offset reused after the topic was recreated is a new one, even with the same bytes
# (a restarted local broker and a deterministic producer repeat them): the broker's topic id names
# the log's incarnation.
REJECTED_KEY_COLUMNS = ("topic", "topic_id", "partition", "offset", "message_sha256")


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


@dataclass
class ValidatedValues:
    """`validate_values` of one batch.

    `events`: the valid values, one row each in input order: `position` (the index in the
    input) and the requested columns. `rejected`: `position` and `reason` of the others, in order.
    """

    events: pl.DataFrame
    rejected: pl.DataFrame

    @property
    def invalid(self) -> list[tuple[int, str]]:
        """`(index, reason)` of every rejected value."""
        return list(self.rejected.iter_rows())

    def dates_by_index(self, n: int) -> list[str | None]:
        """The `event_date` of each of the `n` input values, None where invalid."""
        dates: list[str | None] = [None] * n
        for i, day in zip(self.events["position"].to_list(), self.events["event_date"].to_list()):
            dates[i] = day
        return dates


@contextmanager
def gc_paused() -> Iterator[None]:
    """Bulk reads build 100k of small acyclic objects (messages, bytes, lists): each one would trigger
    cyclic-GC passes over the whole (large) heap for nothing; reference counting frees them anyway."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_event_ts(text: str) -> datetime:
    """An RFC 3339 timestamp with a zone, as an aware UTC datetime; ValueError otherwise."""
    if not _RFC3339.match(text):
        raise ValueError(f"event_ts {text[:60]!r} is not an RFC 3339 timestamp with a zone")
    return datetime.fromisoformat(text.replace("z", "Z")).astimezone(timezone.utc)


def _timestamp_reason(text: str) -> str:
    try:
        parse_event_ts(text)
    except ValueError as exc:
        reason = str(exc)
        return reason if reason.startswith("event_ts") else f"event_ts {text[:60]!r} is not a valid timestamp: {reason}"
    return f"event_ts {text[:60]!r} is not a valid RFC 3339 timestamp"


def parse_value(value: bytes, names: EventNames | None = None) -> tuple[str | None, ...] | str:
    """The six fields (canonical order) and `extra` of one value, or why its structure breaks the contract.

    The exact path, one value at a time with jiter (timestamps are checked afterwards): what
    `validate_values` does for values outside the common shape, and the reference its
    vectorized paths are tested against.
    """
    names = names or current_names()
    try:
        data = from_json(value)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if type(data) is not dict:
        return "not a JSON object"
    required = names.json
    missing = [name for name in required if name not in data]
    problems = [f"missing required field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"] if missing else []
    id_name = names.of["event_id"]
    for name in required:
        if name not in data:
            continue
        field_value = data[name]
        if type(field_value) is not str:  # strict: a number where a string is expected is a producer bug
            problems.append(f"wrong type: {name} must be a string, got {type(field_value).__name__}")
        elif name == id_name and not field_value:
            problems.append(f"{id_name} must not be empty")
    if problems:
        return "; ".join(problems)
    extra = {k: v for k, v in data.items()
             if k not in required and (names.keep_extra is None or k in names.keep_extra)}
    return (*(data[name] for name in required), _EXTRA_JSON.encode(extra) if extra else None)


def _as_text(raw: pl.Series) -> pl.Series:
    """The values as text; null where a value is null or not UTF-8."""
    try:
        return raw.cast(pl.String)
    except pl.exceptions.ComputeError:  # some value is not UTF-8: decode one by one (rare)
        def utf8_or_none(value: bytes | None) -> str | None:
            try:
                return value.decode("utf-8") if value is not None else None
            except UnicodeDecodeError:
                return None
        return pl.Series(raw.name, [utf8_or_none(v) for v in raw.to_list()], dtype=pl.String)


def _utc_timestamp(text: pl.Expr) -> pl.Expr:
    """UTC datetime of an RFC 3339 text with a `T` (null where that part does not parse).

    Sound only where `_RFC3339_PATTERN` matches (checked beside it): the fixed-width local time,
    an optional fraction, then `Z` or `+hh:mm`. Parsing the parts apart is about twice as fast
    as a format with `%:z`.
    """
    zulu = text.str.slice(-1).is_in(["Z", "z"])
    zone_len = pl.when(zulu).then(1).otherwise(6)
    hours = text.str.slice(-5, 2).cast(pl.Int64, strict=False)
    minutes = text.str.slice(-2, 2).cast(pl.Int64, strict=False)
    sign = pl.when(text.str.slice(-6, 1) == "-").then(-1).otherwise(1)
    offset = pl.when(zulu).then(0).when((hours < 24) & (minutes < 60)).then(sign * (hours * 60 + minutes))
    fraction_len = text.str.len_bytes() - 20 - zone_len
    micros = pl.when((text.str.slice(19, 1) == ".") & (fraction_len > 0)).then(
        text.str.slice(20, fraction_len).str.slice(0, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False)
    ).otherwise(0)
    local = text.str.slice(0, 19).str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="us", strict=False)
    return (local - pl.duration(minutes=offset) + pl.duration(microseconds=micros)).dt.replace_time_zone("UTC")


def _utc_timestamp_any_spelling(text: pl.Expr) -> pl.Expr:
    """Also a `t` or a space between date and time (slower: only for the rows that need it)."""
    return _utc_timestamp(text.str.replace(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]", "${1}T"))


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


def _precheck(raw: pl.Series, max_payload_bytes: int) -> tuple[pl.Series, list[tuple[int, str]]]:
    """Which values pass the checks before any parsing (empty, too large, NUL bytes), and why the others fail."""
    size = raw.bin.size()
    empty = (size.is_null() | (size == 0)).fill_null(True)
    too_large = (size > max_payload_bytes).fill_null(False)
    nul = raw.bin.contains(b"\x00").fill_null(False)
    failing = empty | too_large | nul
    reasons: list[tuple[int, str]] = []
    if failing.any():  # worded for the failing values only
        for i, n, is_empty, is_large in zip(failing.arg_true().to_list(), size.filter(failing).to_list(),
                                            empty.filter(failing).to_list(), too_large.filter(failing).to_list()):
            reasons.append((i, EMPTY_VALUE if is_empty else
                            f"payload of {n} bytes is over the {max_payload_bytes}-byte limit" if is_large else
                            "value contains NUL bytes"))
    return ~failing, reasons


def validate_values(values: Sequence[bytes | None] | pl.Series, *,
                    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, window: PartitionWindow | None = None,
                    columns: Sequence[str] = EVENT_COLUMNS, names: EventNames | None = None) -> ValidatedValues:
    """Check a batch of message values against the contract (see the module docstring).

    `columns` are the `events` columns to build (`DATE_COLUMNS` for the sensor); the verdicts
    and reasons are the same whatever they are. `names`: the JSON field names (default: the
    domain pack's).
    """
    names = names or current_names()
    raw = values if isinstance(values, pl.Series) else pl.Series("value", values, dtype=pl.Binary)
    passing, reasons = _precheck(raw, max_payload_bytes)
    text = _as_text(raw)
    candidates = pl.DataFrame({"position": pl.int_range(len(raw), dtype=pl.UInt32, eager=True), "text": text}
                              ).filter(passing)
    order = _key_order(candidates["text"].drop_nulls().head(32).to_list(), names)
    # Only the sensor's columns: the same proofs, fewer captures (captures are what a regex costs).
    fields = (*REQUIRED_FIELDS, "extra") if set(columns) - set(DATE_COLUMNS) else ("event_ts",)
    # 1. The common shape without escapes: one regex proves it (and captures the fields).
    if "payload_raw" in fields:
        plain = candidates.select("position", groups=pl.col("text").str.extract_groups(
            _object_pattern(order, _PLAIN_CAPTURE, _PLAIN_EVENT_ID_CAPTURE, names))).unnest("groups").filter(
            pl.col("event_id").is_not_null())
    else:
        # In a value of that shape the event time's key followed by a colon can only be the key.
        event_ts = rf'"{re.escape(names.of["event_ts"])}"{_WS}:{_WS}"([^"]*)"'
        plain = candidates.filter(pl.col("text").str.contains(_object_pattern(order, _PLAIN, _PLAIN_EVENT_ID, names))
                                  ).select("position", pl.col("text").str.extract(event_ts, 1).alias("event_ts"))
    shaped = [plain.select("position", *(f for f in fields if f != "extra"))]
    rest = candidates.filter(~candidates["position"].is_in(shaped[0]["position"].implode()))
    # 2. The same shape with escapes in values: proven by a regex, decoded by polars' JSON reader.
    escaped = rest.filter(pl.col("text").str.contains("\\", literal=True)
                          & pl.col("text").str.contains(_object_pattern(order, _STRING, _STRING_EVENT_ID, names))
                          & ~pl.col("text").str.contains(_SURROGATE_ESCAPE))
    if escaped.height:
        dtype = pl.Struct({json_name: pl.String for json_name in names.json})
        decoded = escaped.select("position", groups=pl.col("text").str.json_decode(dtype)).unnest("groups").rename(
            {json_name: canonical for canonical, json_name in names.of.items() if json_name != canonical})
        shaped.append(decoded.select("position", *(f for f in fields if f != "extra")))
        rest = rest.filter(~pl.col("position").is_in(decoded["position"].implode()))
    # 3. Anything else, one by one with jiter: exact semantics and a worded reason.
    parsed, structure_reasons = [], []
    if rest.height:
        with gc_paused():
            for i, value, no_text in zip(rest["position"].to_list(), raw.gather(rest["position"]).to_list(),
                                         rest["text"].is_null().to_list()):
                outcome = NOT_UTF8 if no_text else parse_value(value, names)
                if type(outcome) is str:
                    structure_reasons.append((i, outcome))
                else:
                    parsed.append((i, *outcome))
    parsed_names = (*REQUIRED_FIELDS, "extra")
    parsed_frame = pl.DataFrame(parsed, schema={"position": pl.UInt32, **dict.fromkeys(parsed_names, pl.String)},
                                orient="row").select("position", *fields)
    shaped = [frame.with_columns(pl.lit(None, dtype=pl.String).alias("extra")) if "extra" in fields else frame
              for frame in shaped]
    values_fields = pl.concat([*shaped, parsed_frame]).sort("position")
    # JSON escapes (`\u0000`, `\u001b`) can put control characters in a field that the byte checks
    # never saw; only values decoded from escapes (paths 2 and 3) can hold them.
    text_fields = [f for f in REQUIRED_FIELDS if f in fields]
    if text_fields and values_fields.height > shaped[0].height:
        decoded = pl.concat([f.select("position") for f in shaped[1:]] + [parsed_frame.select("position")])
        suspects = values_fields.filter(pl.col("position").is_in(decoded["position"].implode()))
        controlled = suspects.filter(pl.any_horizontal(pl.col(f).str.contains(_CONTROL).fill_null(False)
                                                       for f in text_fields))
        if controlled.height:
            for row in controlled.iter_rows(named=True):
                name = next(f for f in text_fields if row[f] is not None and _CONTROL_RE.search(row[f]))
                reasons.append((row["position"], f"{names.of[name]} contains the control character "
                                                 f"U+{ord(_CONTROL_RE.search(row[name]).group()):04X} (from a JSON "
                                                 f"escape); only tab, newline and carriage return are allowed"))
            values_fields = values_fields.filter(~pl.col("position").is_in(controlled["position"].implode()))

    checked = _with_timestamp_checks(values_fields, window).lazy()
    build = {"event_ts": pl.col("ts").alias("event_ts"),
             "event_date": pl.col("ts").dt.date().dt.strftime("%Y-%m-%d").alias("event_date")}
    events, bad_ts = pl.collect_all([
        checked.filter(~pl.col("bad")).select("position", *(build.get(c, pl.col(c)) for c in columns)),
        checked.filter(pl.col("bad")).select("position", "event_ts", "ts"),
    ])
    reasons += structure_reasons
    for i, ts_text, ts in bad_ts.iter_rows():
        if ts is None or not _RFC3339.match(ts_text) or ts_text[17:19] == "60":
            reasons.append((i, _timestamp_reason(ts_text)))
        else:
            reasons.append((i, window.reason_outside(ts.date())))
    rejected = pl.DataFrame(reasons, schema={"position": pl.UInt32, "reason": pl.String}, orient="row"
                            ).sort("position")
    return ValidatedValues(events=events, rejected=rejected)


def events_frame(rows: Iterable[dict]) -> pl.DataFrame:
    """A `raw/events` frame from row dicts (`[]`: an empty one)."""
    return pl.DataFrame(list(rows), schema=RAW_EVENTS_SCHEMA)


def valid_events_frame(checked: ValidatedValues, *, topic: str, partitions: Sequence[int], offsets: Sequence[int],
                       ingested_at: datetime, keys: Sequence[bytes | None] | None = None) -> pl.DataFrame:
    """The `raw/events` rows of a validated batch; `partitions`, `offsets` and `keys` are per input value."""
    idx = checked.events["position"]
    key_text = pl.lit(None, dtype=pl.String).alias("kafka_key") if keys is None else pl.Series(
        "kafka_key", [k.decode("utf-8", "backslashreplace") if k is not None else None for k in keys],
        dtype=pl.String).gather(idx)
    return checked.events.select(
        *EVENT_COLUMNS,
        pl.lit(topic, dtype=pl.String).alias("kafka_topic"),
        pl.Series("kafka_partition", partitions, dtype=pl.Int32).gather(idx),
        pl.Series("kafka_offset", offsets, dtype=pl.Int64).gather(idx),
        pl.lit(ingested_at, dtype=pl.Datetime("us", "UTC")).alias("ingested_at"),
        key_text,
    ).cast(RAW_EVENTS_SCHEMA)


def message_sha256(key: bytes | None, value: bytes | None) -> str:
    """A digest of a message's key and value (null and empty told apart) for the dead letter's identity."""
    digest = hashlib.sha256()
    for part in (key, value):
        digest.update(b"\x00" if part is None else b"\x01" + len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def rejected_row(*, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 reason: str, seen_at: datetime, topic_id: str = "") -> dict:
    """The `raw/rejected_events` row of an invalid message (the value kept byte for byte)."""
    return {"topic": topic, "topic_id": topic_id, "partition": partition, "offset": offset,
            "message_sha256": message_sha256(key, value),
            "key": key.decode("utf-8", "backslashreplace") if key is not None else None,
            "value_b64": base64.b64encode(value).decode("ascii") if value is not None else None,
            "error": reason, "seen_at": seen_at}


def rejected_events_frame(checked: ValidatedValues, *, topic: str, partitions: Sequence[int],
                          offsets: Sequence[int], keys: Sequence[bytes | None], values: Sequence[bytes | None],
                          seen_at: datetime, topic_id: str = "") -> pl.DataFrame:
    """The `raw/rejected_events` rows of a validated batch; `topic_id` names the log's incarnation, the
    other arguments are per input value."""
    return rejected_frame(
        rejected_row(topic=topic, partition=partitions[i], offset=offsets[i], key=keys[i], value=values[i],
                     reason=reason, seen_at=seen_at, topic_id=topic_id) for i, reason in checked.rejected.iter_rows())


def rejected_frame(rows: Iterable[dict]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=REJECTED_EVENTS_SCHEMA)


def new_or_changed_events(incoming: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """The incoming rows whose content is not already stored (so a re-run writes nothing)."""
    if stored.is_empty() or incoming.is_empty():
        return incoming
    cols = list(EVENT_CONTENT_COLUMNS)
    return incoming.join(stored.select(cols).unique(), on=cols, how="anti", nulls_equal=True)


def unseen_rejections(incoming: pl.DataFrame, stored_keys: pl.DataFrame) -> pl.DataFrame:
    """The incoming dead letters whose identity (`REJECTED_KEY_COLUMNS`) is not stored yet."""
    if stored_keys.is_empty() or incoming.is_empty():
        return incoming
    return incoming.join(stored_keys.select(list(REJECTED_KEY_COLUMNS)).unique(),
                         on=list(REJECTED_KEY_COLUMNS), how="anti")
