"""Quality gates of `raw/events`, evaluated per daily partition.

Both checks are declared on the ingest asset (`check_specs`) and evaluated by it right after
its write (the project's one check style), reading the table straight from Delta; they are
blocking: `curated/cases` must not build on a broken day. The contract check answers from the Delta
log's per-file statistics (null counts, `event_ts` bounds) when they settle it, so its cost
does not grow with the partition; it reads the rows of a partition only when they do not.

An ingest run covers a partition key range, and Dagster (1.13) attributes an
`AssetCheckResult` of a range run to no partition at all. So each check evaluates every
partition key of its run and reports one `AssetCheckEvaluation` per partition, tied to that
partition's materialization (`partitions.partition_check_evaluation`, the range-run adapter and
the one place that needs a Dagster internal); a failed one fails the step (the checks are blocking).
In a single-partition run this is the same as returning one result.
"""

from datetime import date, datetime, timedelta, timezone
from typing import Iterator

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from llm_assets.asset_keys import RAW_EVENTS
from llm_assets.ingest.contract import REQUIRED_FIELDS
from llm_assets.partitions import check_outputs, daily_partitions, partition_check_evaluation, target_materializations
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


def contract_violations_from_stats(files: pl.DataFrame, partition_key: str) -> tuple[dict[str, int], int] | None:
    """`contract_violations` of a partition and its row count, from the Delta log's per-file
    statistics of its files (`DeltaTable.get_add_actions(flatten=True)`); None when the
    statistics cannot tell (absent, or `event_ts` bounds outside the day: then read the rows).

    Exact when they can: null counts are counts, and a file whose smallest and largest
    `event_ts` lie in the partition's UTC day holds no row of another day (the bounds are
    truncated to milliseconds, and a day starts on a whole millisecond).
    """
    if files.is_empty():
        return {}, 0
    needed = [f"null_count.{c}" for c in NON_NULL_COLUMNS if c != "event_date"] + ["min.event_ts", "max.event_ts"]
    if any(c not in files.columns for c in needed) or files.select(pl.any_horizontal(
            pl.col(needed).is_null())).to_series().any():
        return None
    day_start = datetime.combine(date.fromisoformat(partition_key), datetime.min.time(), tzinfo=timezone.utc)
    lowest = files["min.event_ts"].dt.convert_time_zone("UTC").min()
    highest = files["max.event_ts"].dt.convert_time_zone("UTC").max()
    if lowest < day_start or highest >= day_start + timedelta(days=1):
        return None
    violations = {f"null {c}": int(files[f"null_count.{c}"].sum()) for c in NON_NULL_COLUMNS if c != "event_date"}
    return {rule: n for rule, n in violations.items() if n}, int(files["num_records"].sum())


def _file_stats(delta: DeltaLakeStorage) -> pl.DataFrame:
    """Per-file statistics of `raw/events` from its Delta log (reads no data file)."""
    table = DeltaTable(delta.uri(RAW_EVENTS), storage_options=dict(delta.storage_options) or None)
    return pl.DataFrame(table.get_add_actions(flatten=True))


def _partitions(delta: DeltaLakeStorage, partition_keys: list[str], columns: list[str]) -> dict[str, pl.DataFrame]:
    """The given columns of each partition, read in one scan (empty frame for an empty partition)."""
    if not delta.exists(RAW_EVENTS):
        return {key: pl.DataFrame() for key in partition_keys}
    table = delta.scan(RAW_EVENTS)
    present = set(table.collect_schema().names())  # a missing column is a violation, not a crash
    df = (table.filter(pl.col("event_date").is_in(partition_keys))
          .select([c for c in columns if c in present]).collect())
    by_day = {key: part for (key,), part in df.partition_by("event_date", as_dict=True, maintain_order=False).items()}
    return {key: by_day.get(key, df.clear()) for key in partition_keys}


CONTRACT_COLUMNS = list(dict.fromkeys([*NON_NULL_COLUMNS, "event_ts", "event_date"]))


def _contract_results(delta: DeltaLakeStorage, partition_keys: list[str]) -> dict[str, tuple[dict[str, int], int]]:
    """Per partition key: the violations by rule and the rows checked (statistics first, rows where needed)."""
    if not delta.exists(RAW_EVENTS):
        return {key: ({}, 0) for key in partition_keys}
    results: dict[str, tuple[dict[str, int], int] | None] = dict.fromkeys(partition_keys)
    if set(NON_NULL_COLUMNS) <= set(delta.scan(RAW_EVENTS).collect_schema().names()):
        stats = _file_stats(delta)
        if "partition.event_date" in stats.columns:
            for key in partition_keys:
                results[key] = contract_violations_from_stats(
                    stats.filter(pl.col("partition.event_date") == key), key)
    unsettled = [key for key, result in results.items() if result is None]
    for key, df in (_partitions(delta, unsettled, CONTRACT_COLUMNS).items() if unsettled else []):
        results[key] = (contract_violations(df, key), df.height)
    return results


CONTRACT = "raw_events_contract"
UNIQUE_EVENT_ID = "raw_events_unique_event_id"
RAW_EVENTS_CHECK_SPECS = [
    dg.AssetCheckSpec(CONTRACT, asset=RAW_EVENTS, partitions_def=daily_partitions, blocking=True,
                      description="Required columns are non-null and event_date is the UTC day of event_ts."),
    dg.AssetCheckSpec(UNIQUE_EVENT_ID, asset=RAW_EVENTS, partitions_def=daily_partitions, blocking=True,
                      description="Each event_id appears once in the partition."),
]


def raw_events_check_evaluations(context: dg.AssetExecutionContext, delta: DeltaLakeStorage) -> Iterator:
    """The selected checks of `raw/events` for every partition key of the run (after its write), then
    the check outputs Dagster expects: downstream steps wait on the blocking ones."""
    selected = {key.name for key in context.selected_asset_check_keys if key.asset_key == RAW_EVENTS}
    keys = list(context.partition_keys)
    targets = target_materializations(context, RAW_EVENTS, keys) if selected else {}
    if CONTRACT in selected:
        for key, (violations, rows) in _contract_results(delta, keys).items():
            md = "| rule | rows |\n|---|---|\n" + "\n".join(f"| {rule} | {n} |" for rule, n in violations.items())
            metadata = {"partition": key, "rows_checked": rows,
                        "violations": dg.MetadataValue.md(md if violations else "none")}
            yield partition_check_evaluation(context, asset_key=RAW_EVENTS, check_name=CONTRACT, partition=key,
                                             passed=not violations, metadata=metadata, targets=targets)
    if UNIQUE_EVENT_ID in selected:
        for key, df in _partitions(delta, keys, ["event_id", "event_date"]).items():
            dupes = duplicate_event_ids(df)
            metadata = {"partition": key, "rows_checked": df.height, "duplicated_event_ids": dupes.height,
                        "examples": ", ".join(dupes["event_id"].head(10).to_list()) or "none"}
            yield partition_check_evaluation(context, asset_key=RAW_EVENTS, check_name=UNIQUE_EVENT_ID,
                                             partition=key, passed=dupes.is_empty(), metadata=metadata,
                                             targets=targets)
    if selected:
        yield from check_outputs(context)
