"""Quality gates of `raw/events`, evaluated per daily partition.

Both checks read the run's partition straight from Delta (`context.partition_key`):
dagster-deltalake's IO manager checks the wrong partition (ARCHITECTURE section 8). Both
block downstream assets in the same run: `curated/cases` must not build on a broken day.
"""

import dagster as dg
import polars as pl

from llm_assets.ingest.assets import RAW_EVENTS_KEY, raw_events
from llm_assets.ingest.contract import REQUIRED_FIELDS
from llm_assets.partitions import daily_partitions
from llm_assets.resources.delta import DeltaLakeStorage

NON_NULL_COLUMNS = (*REQUIRED_FIELDS, "event_date", "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at")


def contract_violations(df: pl.DataFrame, partition_key: str) -> dict[str, int]:
    """Rows breaking the `raw/events` contract, by rule (pure, for the check and its tests)."""
    if df.is_empty():
        return {}
    violations = {f"null {c}": int(df[c].null_count()) for c in NON_NULL_COLUMNS if c in df.columns}
    violations["missing columns"] = sum(c not in df.columns for c in NON_NULL_COLUMNS)
    if "event_ts" in df.columns and "event_date" in df.columns:
        utc_day = df["event_ts"].dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d")
        violations["event_date differs from the UTC day of event_ts"] = int((utc_day != df["event_date"]).sum())
        violations["event_date differs from the partition"] = int((df["event_date"] != partition_key).sum())
    return {rule: n for rule, n in violations.items() if n}


def duplicate_event_ids(df: pl.DataFrame) -> pl.DataFrame:
    """`event_id`s that appear more than once, with their count."""
    if df.is_empty():
        return pl.DataFrame({"event_id": [], "rows": []}, schema={"event_id": pl.String, "rows": pl.UInt32})
    return df.group_by("event_id").agg(pl.len().alias("rows")).filter(pl.col("rows") > 1).sort("event_id")


def _partition(delta: DeltaLakeStorage, partition_key: str) -> pl.DataFrame:
    return delta.read(RAW_EVENTS_KEY, partition_column="event_date", partition_values=[partition_key])


@dg.asset_check(asset=raw_events, partitions_def=daily_partitions, blocking=True,
                description="Required columns are non-null and event_date is the UTC day of event_ts.")
def raw_events_contract(context: dg.AssetCheckExecutionContext, delta: DeltaLakeStorage) -> dg.AssetCheckResult:
    df = _partition(delta, context.partition_key)
    violations = contract_violations(df, context.partition_key)
    md = "| rule | rows |\n|---|---|\n" + "\n".join(f"| {rule} | {n} |" for rule, n in violations.items())
    return dg.AssetCheckResult(
        passed=not violations,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"partition": context.partition_key, "rows_checked": df.height,
                  "violations": dg.MetadataValue.md(md if violations else "none")},
    )


@dg.asset_check(asset=raw_events, partitions_def=daily_partitions, blocking=True,
                description="Each event_id appears once in the partition.")
def raw_events_unique_event_id(context: dg.AssetCheckExecutionContext,
                               delta: DeltaLakeStorage) -> dg.AssetCheckResult:
    df = _partition(delta, context.partition_key)
    dupes = duplicate_event_ids(df)
    return dg.AssetCheckResult(
        passed=dupes.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"partition": context.partition_key, "rows_checked": df.height,
                  "duplicated_event_ids": dupes.height,
                  "examples": ", ".join(dupes["event_id"].head(10).to_list()) or "none"},
    )


raw_events_checks = [raw_events_contract, raw_events_unique_event_id]
