"""Pure logic of the curated layer: loading signal sources and the LEFT JOIN with defaults.

No Dagster import: the assets call these functions and the tests call them directly.
"""

from __future__ import annotations

import json
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
CURATED_COLUMNS = RAW_COLUMNS + (
    "device_id", "customer_hash", "partner_risk_tier", "is_exception", "exception_type", "features",
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


def load_entity_signals(path: Path) -> pl.DataFrame:
    """Entity signals from JSONL, one row per `entity_id` (the last wins)."""
    rows = _read_jsonl(path)
    for row in rows:
        row["features"] = {k: float(v) for k, v in (row.get("features") or {}).items() if k in FEATURE_NAMES}
        row["features"] = {name: row["features"].get(name) for name in FEATURE_NAMES}
    df = pl.DataFrame(rows, schema=ENTITY_SIGNALS_SCHEMA)
    return df.unique(subset=["entity_id"], keep="last", maintain_order=True)


def load_exceptions(path: Path) -> pl.DataFrame:
    """Upstream exceptions from JSONL, one row per `event_id` (the last wins)."""
    df = pl.DataFrame(_read_jsonl(path), schema=EXCEPTIONS_SCHEMA)
    return df.unique(subset=["event_id"], keep="last", maintain_order=True)


def curate_cases(raw_events: pl.DataFrame, entity_signals: pl.DataFrame, exceptions: pl.DataFrame) -> pl.DataFrame:
    """raw events LEFT JOIN entity signals (entity_id) LEFT JOIN exceptions (event_id), with defaults.

    The row count always equals the raw row count: signals and exceptions are made unique
    on their join keys first, so a duplicated signal can never fan a case out.
    """
    signals = (entity_signals if not entity_signals.is_empty() else pl.DataFrame(schema=ENTITY_SIGNALS_SCHEMA))
    signals = signals.select(list(ENTITY_SIGNALS_SCHEMA)).unique(subset=["entity_id"], keep="last")
    excs = (exceptions if not exceptions.is_empty() else pl.DataFrame(schema=EXCEPTIONS_SCHEMA))
    excs = excs.select(list(EXCEPTIONS_SCHEMA)).unique(subset=["event_id"], keep="last")
    return (
        raw_events.select(list(RAW_COLUMNS))
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
    }
    counts = cases.select([expr.sum().alias(name) for name, expr in rules.items()]).row(0, named=True)
    return {name: int(n) for name, n in counts.items() if n}
