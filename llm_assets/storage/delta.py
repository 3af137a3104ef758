"""Idempotent Delta Lake writes and partition-aware reads, with no Dagster import.

Every write is keyed: a partition write MERGEs on its key columns with the partition
column in the predicate (concurrent runs on other dates never conflict), so a re-run
or a duplicate delivery leaves one row. Wide windows are read with `polars.scan_delta`
directly (dagster-deltalake's IO manager returns only the first day of a window).
"""

from __future__ import annotations

import random
import time
from typing import Sequence

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError


def table_exists(uri: str, storage_options: dict[str, str] | None = None) -> bool:
    return DeltaTable.is_deltatable(uri, storage_options=storage_options)


def table_version(uri: str, storage_options: dict[str, str] | None = None) -> int | None:
    """The table's current version (None when there is no table): read a snapshot with it."""
    if not table_exists(uri, storage_options):
        return None
    return DeltaTable(uri, storage_options=storage_options).version()


def _partition_clause(partition_column: str, partition_value: str | Sequence[str]) -> str:
    """`t.col = 'v'`, or `t.col IN ('v1', 'v2')` for a write that covers several partitions in one commit."""
    if isinstance(partition_value, str):
        return f"t.{partition_column} = '{partition_value}'"
    if not partition_value:
        raise ValueError("a partition write needs at least one partition value")
    return f"t.{partition_column} IN ({', '.join(repr(str(v)) for v in partition_value)})"


def _merge_predicate(keys: Sequence[str], partition_column: str | None,
                     partition_value: str | Sequence[str] | None) -> str:
    clauses = [f"t.{k} = s.{k}" for k in keys]
    if partition_column is not None and partition_value is not None:
        clauses.append(_partition_clause(partition_column, partition_value))
    return " AND ".join(clauses)


def merge_rows(
    df: pl.DataFrame,
    uri: str,
    keys: Sequence[str],
    *,
    partition_column: str | None = None,
    partition_value: str | Sequence[str] | None = None,
    storage_options: dict[str, str] | None = None,
    delete_unmatched: bool = False,
    merge_schema: bool = False,
) -> dict[str, int | None]:
    """Upsert `df` into the table at `uri` on `keys`; creates the table on first write.

    Returns the merge counts (`inserted`, `updated`, `deleted`) and `version`, the table
    version this write committed (the current one when nothing was written; None without
    a table), so a reader can check exactly what was written. Rows are de-duplicated on
    `keys` first (the last one wins) so one batch can never insert a key twice.
    `delete_unmatched` (with a partition) also deletes the partition's rows absent from
    `df`: the partition is replaced in one commit. `merge_schema` adds new columns of `df`.
    `partition_value` may list several partitions: one commit writes them all (a range run's
    dates), with the same guarantees per partition.
    """
    df = df.unique(subset=list(keys), keep="last", maintain_order=True)
    partition_by = [partition_column] if partition_column else None
    if delete_unmatched and (partition_column is None or partition_value is None):
        raise ValueError("delete_unmatched replaces one partition: give partition_column and partition_value")
    if df.is_empty() and not table_exists(uri, storage_options):
        return {"inserted": 0, "updated": 0, "deleted": 0, "version": None}
    if not table_exists(uri, storage_options):
        try:
            df.write_delta(uri, mode="error", storage_options=storage_options,
                           delta_write_options={"partition_by": partition_by} if partition_by else None)
            return {"inserted": df.height, "updated": 0, "deleted": 0, "version": 0}
        except (DeltaError, CommitFailedError, FileExistsError, ValueError):
            # Another run created the table first: fall through to an ordinary merge.
            if not table_exists(uri, storage_options):
                raise
    # Concurrent writers of the same date (a backfill beside a micro-batch) can lose the optimistic
    # commit race; MERGE on the key is idempotent, so the loser re-reads the table and merges again.
    for attempt in range(MERGE_COMMIT_ATTEMPTS):
        try:
            return _merge_once(df, uri, keys, partition_column, partition_value, storage_options,
                               delete_unmatched, merge_schema)
        except CommitFailedError:
            if attempt == MERGE_COMMIT_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.05, 0.5) * (attempt + 1))
    raise AssertionError("unreachable")


MERGE_COMMIT_ATTEMPTS = 5


def _merge_once(df: pl.DataFrame, uri: str, keys: Sequence[str], partition_column: str | None,
                partition_value: str | Sequence[str] | None, storage_options: dict[str, str] | None, delete_unmatched: bool,
                merge_schema: bool) -> dict[str, int | None]:
    table = DeltaTable(uri, storage_options=storage_options)  # after the merge: the version it committed
    if df.is_empty() and not delete_unmatched:
        return {"inserted": 0, "updated": 0, "deleted": 0, "version": table.version()}
    merger = (
        df.write_delta(
            table,
            mode="merge",
            delta_merge_options={
                "predicate": _merge_predicate(keys, partition_column, partition_value),
                "source_alias": "s",
                "target_alias": "t",
                "merge_schema": merge_schema,
                # The source is an in-memory frame anyway; materialized, its key range prunes target files.
                "streamed_exec": False,
            },
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
    )
    if delete_unmatched:
        merger = merger.when_not_matched_by_source_delete(predicate=_partition_clause(partition_column, partition_value))
    metrics = merger.execute()
    return {"inserted": int(metrics.get("num_target_rows_inserted", 0)),
            "updated": int(metrics.get("num_target_rows_updated", 0)),
            "deleted": int(metrics.get("num_target_rows_deleted", 0)),
            "version": table.version()}


def append_rows(df: pl.DataFrame, uri: str, *, partition_column: str | None = None,
                storage_options: dict[str, str] | None = None) -> int | None:
    """Append `df` (a ledger's entries) in one commit; returns the version committed (None: nothing
    to write). Blind appends never conflict with each other, so concurrent writers need no retry."""
    if df.is_empty():
        return None
    df.write_delta(uri, mode="append", storage_options=storage_options,
                   delta_write_options={"partition_by": [partition_column]} if partition_column else None)
    return DeltaTable(uri, storage_options=storage_options).version()


def overwrite(df: pl.DataFrame, uri: str, storage_options: dict[str, str] | None = None) -> None:
    """Replace a small unpartitioned table (signals, exceptions) as a whole, atomically."""
    df.write_delta(uri, mode="overwrite", storage_options=storage_options,
                   delta_write_options={"schema_mode": "overwrite"})


def read_table(
    uri: str,
    *,
    partition_column: str | None = None,
    partition_values: Sequence[str] | None = None,
    storage_options: dict[str, str] | None = None,
    version: int | None = None,
) -> pl.DataFrame:
    """Read a table (at `version`, else the latest), or only the given partitions of it;
    an absent table reads as empty."""
    if not table_exists(uri, storage_options):
        return pl.DataFrame()
    lf = pl.scan_delta(uri, version=version, storage_options=storage_options)
    if partition_column and partition_values is not None:
        lf = lf.filter(pl.col(partition_column).is_in(list(partition_values)))
    return lf.collect()


def count_rows(uri: str, *, partition_column: str | None = None, partition_value: str | None = None,
               storage_options: dict[str, str] | None = None) -> int:
    if not table_exists(uri, storage_options):
        return 0
    lf = pl.scan_delta(uri, storage_options=storage_options)
    if partition_column and partition_value is not None:
        lf = lf.filter(pl.col(partition_column) == partition_value)
    return int(lf.select(pl.len()).collect().item())


def replace_partition(
    df: pl.DataFrame,
    uri: str,
    *,
    partition_column: str,
    partition_value: str,
    storage_options: dict[str, str] | None = None,
) -> int:
    """Atomically replace one partition with `df` (a full recompute of that partition).

    Other partitions are untouched, so concurrent runs on other dates never conflict and
    a re-run leaves exactly the rows of the latest computation.
    """
    if not df.is_empty() and (df[partition_column] != partition_value).any():
        raise ValueError(f"rows outside partition {partition_column}={partition_value!r} in a partition write")
    if not table_exists(uri, storage_options):
        if df.is_empty():
            return 0
        df.write_delta(uri, mode="append", storage_options=storage_options,
                       delta_write_options={"partition_by": [partition_column]})
        return df.height
    df.write_delta(uri, mode="overwrite", storage_options=storage_options,
                   delta_write_options={"predicate": f"{partition_column} = '{partition_value}'",
                                        "partition_by": [partition_column]})
    return df.height
