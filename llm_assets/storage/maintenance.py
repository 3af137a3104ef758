"""Keeping Delta tables healthy while micro-batches write: compaction, checkpoints, vacuum, retention.

delta-rs does the work (`DeltaTable.optimize.compact` / `.z_order`, `create_checkpoint`,
`cleanup_metadata`, `vacuum`, `delete`); this module measures a table or partition before and after
(files and bytes of the live snapshot, from the add actions), and retries a commit that lost the
optimistic race against a concurrent writer. Compaction rewrites files without changing data
(`dataChange = false`), so a reader or a MERGE beside it sees the rows once, in the old files or the
new; a MERGE that conflicts with it is retried by `delta.merge_rows` the same way. VACUUM removes only
files no snapshot younger than `retention_hours` needs, so keep that longer than any reader's longest
read (the default, 7 days, is Delta's own). No Dagster import.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

COMMIT_ATTEMPTS = 8
DEFAULT_TARGET_SIZE = 128 * 1024 * 1024   # bytes a compacted file aims at
DEFAULT_VACUUM_RETENTION_HOURS = 168
T = TypeVar("T")


@dataclass(frozen=True)
class Footprint:
    files: int
    bytes: int

    def as_dict(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}


def _add_actions(table: DeltaTable) -> pa.Table:
    """The live snapshot's add actions as a pyarrow table (delta-rs hands out an Arrow C-stream table)."""
    return pa.table(table.get_add_actions(flatten=True))


def footprint(table: DeltaTable, partition_column: str | None = None,
              values: Sequence[str] | None = None) -> Footprint:
    """Files and bytes of the live snapshot (or of the partitions `values` of `partition_column`)."""
    actions = _add_actions(table)
    if partition_column and values is not None:
        column = f"partition.{partition_column}"
        if column not in actions.column_names:
            return Footprint(0, 0)
        actions = actions.filter(pc.is_in(actions[column], value_set=pc.cast(list(values), actions[column].type)))
    sizes = actions["size_bytes"].to_pylist() if actions.num_rows else []
    return Footprint(len(sizes), int(sum(sizes)))


def partition_footprints(table: DeltaTable, partition_column: str) -> dict[str, Footprint]:
    """Files and bytes of each partition of the live snapshot."""
    actions = _add_actions(table)
    column = f"partition.{partition_column}"
    if not actions.num_rows or column not in actions.column_names:
        return {}
    out: dict[str, list[int]] = {}
    for value, size in zip(actions[column].to_pylist(), actions["size_bytes"].to_pylist()):
        out.setdefault(str(value), []).append(int(size))
    return {v: Footprint(len(sizes), sum(sizes)) for v, sizes in sorted(out.items())}


def _retrying(attempt: Callable[[], T]) -> T:
    """`attempt()`, again after a lost commit race (a concurrent writer committed first)."""
    for n in range(COMMIT_ATTEMPTS):
        try:
            return attempt()
        except CommitFailedError:
            if n == COMMIT_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.05, 0.3) * (n + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Compaction:
    partition: str | None
    before: Footprint
    after: Footprint
    files_removed: int
    files_added: int


def compact(uri: str, *, partition_column: str | None = None, value: str | None = None,
            z_order: Sequence[str] = (), target_size: int = DEFAULT_TARGET_SIZE,
            storage_options: dict[str, str] | None = None) -> Compaction:
    """OPTIMIZE one partition (or the whole table): small files into few; Z-order on `z_order` columns."""
    values = [value] if value is not None else None
    filters = [(partition_column, "=", value)] if partition_column and value is not None else None

    def once() -> Compaction:
        table = DeltaTable(uri, storage_options=storage_options)
        before = footprint(table, partition_column, values)
        if before.files <= 1 and not z_order:
            return Compaction(value, before, before, 0, 0)
        optimizer = table.optimize
        metrics = (optimizer.z_order(list(z_order), partition_filters=filters, target_size=target_size) if z_order
                   else optimizer.compact(partition_filters=filters, target_size=target_size))
        after = footprint(DeltaTable(uri, storage_options=storage_options), partition_column, values)
        return Compaction(value, before, after, int(metrics.get("numFilesRemoved", 0)),
                          int(metrics.get("numFilesAdded", 0)))

    return _retrying(once)


def checkpoint(uri: str, storage_options: dict[str, str] | None = None) -> int:
    """Write a checkpoint of the current version and drop log entries past the log retention; returns
    the version checkpointed (a reader then replays at most the commits after it)."""
    table = DeltaTable(uri, storage_options=storage_options)
    table.create_checkpoint()
    table.cleanup_metadata()
    return table.version()


def vacuum(uri: str, *, retention_hours: int = DEFAULT_VACUUM_RETENTION_HOURS,
           storage_options: dict[str, str] | None = None) -> list[str]:
    """Delete files no snapshot of the last `retention_hours` needs; returns the paths removed."""
    table = DeltaTable(uri, storage_options=storage_options)
    return _retrying(lambda: table.vacuum(retention_hours=retention_hours, dry_run=False,
                                          enforce_retention_duration=retention_hours >= DEFAULT_VACUUM_RETENTION_HOURS))


@dataclass(frozen=True)
class Removal:
    rows: int
    partitions: list[str]


def delete_before(uri: str, column: str, cutoff: str | datetime, *, partitioned: bool = False,
                  storage_options: dict[str, str] | None = None) -> Removal:
    """Delete the rows whose `column` is before `cutoff` (a date string for a partition column, else a
    timestamp) in one commit; returns how many rows went, and which partitions when `partitioned`."""
    # A timestamp column is stored as microseconds in UTC: the literal is cast to exactly that type.
    literal = (f"'{cutoff}'" if isinstance(cutoff, str) else
               f"arrow_cast('{cutoff.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}', "
               f"'Timestamp(Microsecond, Some(\"UTC\"))')")
    table = DeltaTable(uri, storage_options=storage_options)
    partitions = []
    if partitioned:
        actions = _add_actions(table)
        name = f"partition.{column}"
        if name in actions.column_names:
            partitions = sorted({v for v in actions[name].to_pylist() if v is not None and v < str(cutoff)})
        if not partitions:
            return Removal(0, [])

    def once() -> Removal:
        metrics = DeltaTable(uri, storage_options=storage_options).delete(f"{column} < {literal}")
        return Removal(int(metrics.get("num_deleted_rows", 0)), partitions)

    return _retrying(once)
