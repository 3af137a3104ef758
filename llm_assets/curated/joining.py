"""Pure logic of the curated layer: loading signal sources, the LEFT JOIN with defaults,
the incremental plan (which raw events are new or changed) and the checks' computations.

No Dagster import: the assets call these functions and the tests call them directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

FEATURE_NAMES = ("velocity_1h", "chargeback_ratio", "account_age_days", "amount_zscore")
FEATURES_DTYPE = pl.Struct({name: pl.Float64 for name in FEATURE_NAMES})

ENTITY_SIGNALS_SCHEMA = {
    "entity_id": pl.String, "device_id": pl.String, "customer_hash": pl.String,
    "partner_risk_tier": pl.String, "features": FEATURES_DTYPE,
}
EXCEPTIONS_SCHEMA = {"event_id": pl.String, "is_exception": pl.Boolean, "exception_type": pl.String}

RAW_COLUMNS = ("event_id", "event_date", "source_system", "event_ts", "partner_id", "entity_id", "payload_raw")
# Hash of a raw row's RAW_COLUMNS, stored in curated: a raw event whose hash is already there
# is curated and is never rewritten by an incremental run.
SOURCE_HASH = "source_sha256"
CURATED_COLUMNS = RAW_COLUMNS + (
    "device_id", "customer_hash", "partner_risk_tier", "is_exception", "exception_type", "features", SOURCE_HASH,
)
RISK_TIERS = ("low", "medium", "high", "unknown")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with Path(path).open() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from exc
    return rows


def read_rows(location: Path | str | None) -> list[dict]:
    """The rows of a source table: JSONL, CSV or Parquet by file suffix, else a Delta table (path or
    URI); None (the domain pack names no such source): no rows."""
    if location is None:
        return []
    text = str(location)
    suffix = text.rsplit(".", 1)[-1].lower() if "." in Path(text).name else ""
    if suffix in ("jsonl", "json", "ndjson"):
        return _read_jsonl(Path(text))
    if suffix == "csv":
        return pl.read_csv(text, infer_schema=False).to_dicts()
    if suffix == "parquet":
        return pl.read_parquet(text).to_dicts()
    return pl.read_delta(text).to_dicts()


def load_entity_signals(path: Path | str | None) -> pl.DataFrame:
    """Entity signals (JSONL, CSV, Parquet or Delta), one row per `entity_id` (the last wins)."""
    rows = read_rows(path)
    for row in rows:
        row["features"] = {k: float(v) for k, v in (row.get("features") or {}).items() if k in FEATURE_NAMES}
        row["features"] = {name: row["features"].get(name) for name in FEATURE_NAMES}
    df = pl.DataFrame(rows, schema=ENTITY_SIGNALS_SCHEMA)
    return df.unique(subset=["entity_id"], keep="last", maintain_order=True)


def load_exceptions(path: Path | str | None) -> pl.DataFrame:
    """Upstream exceptions (JSONL, CSV, Parquet or Delta), one row per `event_id` (the last wins)."""
    rows = read_rows(path)
    for row in rows:
        if isinstance(row.get("is_exception"), str):
            row["is_exception"] = row["is_exception"].strip().lower() in ("true", "1", "yes")
    df = pl.DataFrame(rows, schema=EXCEPTIONS_SCHEMA)
    return df.unique(subset=["event_id"], keep="last", maintain_order=True)


def _canonical(column: str, dtype: pl.DataType) -> pl.Expr:
    """One column as unambiguous text: null marker, or byte length + ':' + value (UTC ISO for times)."""
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        col = (col.dt.convert_time_zone("UTC") if dtype.time_zone else col).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f")
    else:
        col = col.cast(pl.String)
    return pl.when(col.is_null()).then(pl.lit("-")).otherwise(
        pl.concat_str([col.str.len_bytes().cast(pl.String), pl.lit(":"), col]))


def with_source_hash(raw_events: pl.DataFrame) -> pl.DataFrame:
    """`raw_events` (its RAW_COLUMNS) plus `source_sha256`: sha256 of the row's canonical text.

    Stable across processes and library versions (unlike `pl.Expr.hash`), because it is stored.
    """
    raw = raw_events.select(list(RAW_COLUMNS))
    if raw.is_empty():
        return raw.with_columns(pl.lit(None, dtype=pl.String).alias(SOURCE_HASH))
    text = raw.select(pl.concat_str([_canonical(c, raw.schema[c]) for c in RAW_COLUMNS], separator="|"))
    digests = [hashlib.sha256(t.encode()).hexdigest() for t in text.to_series().to_list()]
    return raw.with_columns(pl.Series(SOURCE_HASH, digests, dtype=pl.String))


def curate_cases(raw_events: pl.DataFrame, entity_signals: pl.DataFrame, exceptions: pl.DataFrame) -> pl.DataFrame:
    """raw events LEFT JOIN entity signals (entity_id) LEFT JOIN exceptions (event_id), with defaults.

    The row count always equals the raw row count: signals and exceptions are made unique
    on their join keys first, so a duplicated signal can never fan a case out. Each case
    carries the `source_sha256` of its raw row.
    """
    signals = (entity_signals if not entity_signals.is_empty() else pl.DataFrame(schema=ENTITY_SIGNALS_SCHEMA))
    signals = signals.select(list(ENTITY_SIGNALS_SCHEMA)).unique(subset=["entity_id"], keep="last")
    excs = (exceptions if not exceptions.is_empty() else pl.DataFrame(schema=EXCEPTIONS_SCHEMA))
    excs = excs.select(list(EXCEPTIONS_SCHEMA)).unique(subset=["event_id"], keep="last")
    raw = raw_events if SOURCE_HASH in raw_events.columns else with_source_hash(raw_events)
    return (
        raw.select([*RAW_COLUMNS, SOURCE_HASH])
        .join(signals, on="entity_id", how="left")
        .join(excs, on="event_id", how="left")
        .with_columns(
            pl.col("partner_risk_tier").fill_null("unknown"),
            pl.col("is_exception").fill_null(False),
            pl.col("exception_type").fill_null("none"),
        )
        .select(list(CURATED_COLUMNS))
        .sort("event_id")
    )


@dataclass(frozen=True)
class IncrementalPlan:
    """What an incremental run curates for one date: the raw rows to MERGE, and the tally."""

    to_curate: pl.DataFrame
    added: int
    changed: int
    unchanged: int


def plan_incremental(raw_day: pl.DataFrame, stored_day: pl.DataFrame) -> IncrementalPlan:
    """The raw rows (with `source_sha256`) of one date that curated does not hold as they are.

    `stored_day`: curated's (`event_id`, `source_sha256`) for the date. An anti-join on both
    columns: a new event_id is added, a known one with another hash (its content changed,
    or a row written before the hash column existed) is changed, the rest stay untouched.
    """
    if stored_day.is_empty():
        return IncrementalPlan(raw_day, added=raw_day.height, changed=0, unchanged=0)
    stored = stored_day.select("event_id", SOURCE_HASH).unique()
    to_curate = raw_day.join(stored, on=["event_id", SOURCE_HASH], how="anti", nulls_equal=False)
    added = to_curate.join(stored.select("event_id"), on="event_id", how="anti").height
    return IncrementalPlan(to_curate, added=added, changed=to_curate.height - added,
                           unchanged=raw_day.height - to_curate.height)


def contract_violations(cases: pl.DataFrame) -> dict[str, int]:
    """Counts of rows breaking the `curated/cases` contract, by rule (empty when none)."""
    if cases.is_empty():
        return {}
    missing = [c for c in CURATED_COLUMNS if c not in cases.columns]
    if missing:
        return {f"missing column {c}": cases.height for c in missing}
    rules = {
        "event_id is null": pl.col("event_id").is_null(),
        "payload_raw is null": pl.col("payload_raw").is_null(),
        "event_ts is null": pl.col("event_ts").is_null(),
        "partner_risk_tier outside low/medium/high/unknown": ~pl.col("partner_risk_tier").is_in(RISK_TIERS),
        "is_exception is null": pl.col("is_exception").is_null(),
        "exception_type is null": pl.col("exception_type").is_null(),
        "exception flagged without a type": pl.col("is_exception") & (pl.col("exception_type") == "none"),
        "source_sha256 is null": pl.col(SOURCE_HASH).is_null(),
    }
    counts = cases.select([expr.sum().alias(name) for name, expr in rules.items()]).row(0, named=True)
    return {name: int(n) for name, n in counts.items() if n}


def duplicate_event_ids(cases: pl.DataFrame) -> int:
    """Rows beyond the first for each event_id (0 when every event_id appears once)."""
    return cases.height - cases["event_id"].n_unique() if cases.height else 0


@dataclass(frozen=True)
class RawComparison:
    """How one date of curated (at the version written) matches raw/events (at the version read)."""

    curated_rows: int
    raw_rows: int
    lost: list[str] = field(default_factory=list)       # raw events without a curated case
    invented: list[str] = field(default_factory=list)   # curated cases without a raw event
    stale: list[str] = field(default_factory=list)      # curated from content raw no longer has

    @property
    def passed(self) -> bool:
        return not (self.lost or self.invented or self.stale)

    def unexplained(self) -> list[str]:
        return sorted(self.invented + self.stale)


def compare_with_raw(curated: pl.DataFrame, raw: pl.DataFrame, newer_raw: pl.DataFrame | None = None) -> RawComparison:
    """Curated (`event_id`, `source_sha256`) of a date against raw's at the version read.

    Every raw event must have a case; every case must come from a raw row. A case may also
    come from `newer_raw` (raw rows of a later version: a concurrent run of the same date
    may have curated them), so only what no raw version explains is invented or stale.
    """
    curated = curated.select("event_id", SOURCE_HASH)
    known = raw.select("event_id", SOURCE_HASH)
    if newer_raw is not None and not newer_raw.is_empty():
        known = pl.concat([known, newer_raw.select("event_id", SOURCE_HASH)]).unique()
    lost = raw.join(curated, on="event_id", how="anti")["event_id"]
    unexplained = curated.join(known, on=["event_id", SOURCE_HASH], how="anti")
    invented = unexplained.join(known, on="event_id", how="anti")["event_id"]
    stale = unexplained.join(known.select("event_id").unique(), on="event_id", how="semi")["event_id"]
    return RawComparison(curated_rows=curated.height, raw_rows=raw.height, lost=sorted(lost.to_list()),
                         invented=sorted(invented.to_list()), stale=sorted(stale.to_list()))
