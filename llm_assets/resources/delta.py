"""`DeltaLakeStorage`: the one Delta IO path of the assets (local disk or object storage)."""

from __future__ import annotations

from typing import Sequence

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets.storage import delta, maintenance


class DeltaLakeStorage(dg.ConfigurableResource):
    """Delta tables under `root` at `{root}/{key prefix}/{key name}`.

    `storage_options` go to delta-rs as they are (credentials, `AWS_S3_LOCKING_PROVIDER`,
    endpoint) so the same assets run on a laptop folder and on S3.
    """

    root: str = Field(description="DELTA_ROOT: a local folder or s3://bucket/prefix")
    storage_options: dict[str, str] = Field(default_factory=dict)

    def uri(self, key: dg.AssetKey) -> str:
        """The table of an asset key: `{root}/{key prefix}/{key name}` (the one place this mapping lives)."""
        if not isinstance(key, dg.AssetKey):
            raise TypeError(f"DeltaLakeStorage takes an AssetKey, got {key!r}")
        return f"{self.root.rstrip('/')}/{'/'.join(key.path)}"

    def _opts(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    def merge(self, key: dg.AssetKey, df: pl.DataFrame, keys: Sequence[str], *, partition_column: str | None = None,
              partition_value: str | Sequence[str] | None = None, delete_unmatched: bool = False,
              merge_schema: bool = False) -> dict[str, int | None]:
        """MERGE on `keys` (into one partition, or several in one commit); returns `inserted`, `updated`,
        `deleted` and the `version` committed."""
        return delta.merge_rows(df, self.uri(key), keys, partition_column=partition_column,
                                partition_value=partition_value, storage_options=self._opts(),
                                delete_unmatched=delete_unmatched, merge_schema=merge_schema)

    def replace_partition(self, key: dg.AssetKey, df: pl.DataFrame, *, partition_column: str, partition_value: str) -> int:
        return delta.replace_partition(df, self.uri(key), partition_column=partition_column,
                                       partition_value=partition_value, storage_options=self._opts())

    def append(self, key: dg.AssetKey, df: pl.DataFrame, *, partition_column: str | None = None) -> int | None:
        """Append rows in one commit (an append-only ledger); returns the version committed."""
        return delta.append_rows(df, self.uri(key), partition_column=partition_column, storage_options=self._opts())

    def overwrite(self, key: dg.AssetKey, df: pl.DataFrame) -> None:
        delta.overwrite(df, self.uri(key), storage_options=self._opts())

    def read(self, key: dg.AssetKey, *, partition_column: str | None = None,
             partition_values: Sequence[str] | None = None, version: int | None = None) -> pl.DataFrame:
        return delta.read_table(self.uri(key), partition_column=partition_column,
                                partition_values=partition_values, storage_options=self._opts(), version=version)

    def scan(self, key: dg.AssetKey, version: int | None = None) -> pl.LazyFrame:
        """A lazy scan of an existing table (at `version`, else the latest), for pushed-down filters."""
        return pl.scan_delta(self.uri(key), version=version, storage_options=self._opts())

    def version(self, key: dg.AssetKey) -> int | None:
        """The table's current version, None without a table (pin reads to it for a consistent snapshot)."""
        return delta.table_version(self.uri(key), self._opts())

    def read_where(self, key: dg.AssetKey, column: str, values: Sequence[str]) -> pl.DataFrame:
        """Rows whose `column` is one of `values` (a filtered scan; any column, not only partitions)."""
        return delta.read_table(self.uri(key), partition_column=column, partition_values=values,
                                storage_options=self._opts())

    def count(self, key: dg.AssetKey, *, partition_column: str | None = None, partition_value: str | None = None) -> int:
        return delta.count_rows(self.uri(key), partition_column=partition_column, partition_value=partition_value,
                                storage_options=self._opts())

    def exists(self, key: dg.AssetKey) -> bool:
        return delta.table_exists(self.uri(key), self._opts())

    # -- maintenance (storage/maintenance.py) ------------------------------------------------------
    def table(self, key: dg.AssetKey):
        """The `deltalake.DeltaTable` of `key` (for footprints); the table must exist."""
        from deltalake import DeltaTable

        return DeltaTable(self.uri(key), storage_options=self._opts())

    def compact(self, key: dg.AssetKey, *, partition_column: str | None = None, value: str | None = None,
                z_order: Sequence[str] = (), target_size: int = maintenance.DEFAULT_TARGET_SIZE):
        return maintenance.compact(self.uri(key), partition_column=partition_column, value=value, z_order=z_order,
                                   target_size=target_size, storage_options=self._opts())

    def checkpoint(self, key: dg.AssetKey) -> int:
        return maintenance.checkpoint(self.uri(key), storage_options=self._opts())

    def vacuum(self, key: dg.AssetKey, *, retention_hours: int = maintenance.DEFAULT_VACUUM_RETENTION_HOURS) -> list[str]:
        return maintenance.vacuum(self.uri(key), retention_hours=retention_hours, storage_options=self._opts())

    def delete_before(self, key: dg.AssetKey, column: str, cutoff, *, partitioned: bool = False):
        return maintenance.delete_before(self.uri(key), column, cutoff, partitioned=partitioned,
                                         storage_options=self._opts())
