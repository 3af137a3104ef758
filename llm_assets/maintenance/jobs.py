"""Jobs that keep the Delta tables healthy while micro-batches write, on schedules nobody has to watch.

- `delta_maintenance_job`, hourly: every partition of `raw/events`, `curated/cases` and
  `enriched/cases` with more than `min_files` data files is compacted (OPTIMIZE; Z-order on
  `event_id` when asked), the unpartitioned hot tables (`raw/rejected_events`, the result cache) too,
  and each table gets a checkpoint (its log is replayed from there) with old log entries cleaned up.
  Its daily run also VACUUMs (files no snapshot of the last `vacuum_retention_hours` needs; 7 days by
  default, longer than any reader's snapshot).
- `retention_job`, daily: deletes `raw/events` partitions, `raw/rejected_events` and result-cache rows
  older than their retention (`settings.retention_days`), and says what it removed. Enriched cases and
  audit bundles are kept.

Each table's numbers (files and bytes before and after, files compacted, vacuumed, rows removed) are
recorded as an `AssetObservation` on the table's own asset, so its page in the UI shows them over
time. Safe beside running micro-batches: compaction changes no data, and a commit that loses the race
against a writer is retried (here, and by the writers' MERGE), so no row is lost or doubled
(`tests/maintenance/`).
"""

from datetime import datetime, timedelta, timezone

import dagster as dg
from pydantic import Field

from llm_assets import settings
from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS, REJECTED_EVENTS, RESULT_CACHE
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.storage.maintenance import DEFAULT_VACUUM_RETENTION_HOURS, footprint, partition_footprints

PARTITIONED = (RAW_EVENTS, CURATED_CASES, ENRICHED_CASES)
UNPARTITIONED = (REJECTED_EVENTS, RESULT_CACHE)
PARTITION_COLUMN = "event_date"


class MaintenanceConfig(dg.Config):
    min_files: int = Field(default=8, ge=2, description="compact a partition once it has more data files than this")
    z_order: bool = Field(default=False, description="Z-order compacted partitions on event_id (prunes key lookups)")
    target_size_mb: int = Field(default=128, ge=1, description="the size a compacted file aims at")
    vacuum: bool = Field(default=False, description="also VACUUM (the daily schedule turns it on)")
    vacuum_retention_hours: int = Field(default=DEFAULT_VACUUM_RETENTION_HOURS, ge=1,
                                        description="files a snapshot of this age still needs are kept")


@dg.op(tags={"kind": "delta"})
def maintain_delta_tables(context: dg.OpExecutionContext, config: MaintenanceConfig, delta: DeltaLakeStorage) -> dict:
    """Compact, checkpoint (and on the daily run vacuum) the hot Delta tables; one observation per table."""
    summary = {}
    for key in PARTITIONED + UNPARTITIONED:
        if not delta.exists(key):
            continue
        name = key.to_user_string()
        before = footprint(delta.table(key))
        compacted = []
        if key in PARTITIONED:
            for value, size in partition_footprints(delta.table(key), PARTITION_COLUMN).items():
                if size.files > config.min_files:
                    compacted.append(delta.compact(key, partition_column=PARTITION_COLUMN, value=value,
                                                   z_order=["event_id"] if config.z_order else (),
                                                   target_size=config.target_size_mb * 1024 * 1024))
        elif before.files > config.min_files:
            compacted.append(delta.compact(key, target_size=config.target_size_mb * 1024 * 1024))
        checkpointed = delta.checkpoint(key)
        vacuumed = delta.vacuum(key, retention_hours=config.vacuum_retention_hours) if config.vacuum else []
        after = footprint(delta.table(key))
        metadata = {
            "maintenance/files_before": before.files, "maintenance/files_after": after.files,
            "maintenance/bytes_before": before.bytes, "maintenance/bytes_after": after.bytes,
            "maintenance/partitions_compacted": len(compacted),
            "maintenance/files_compacted": sum(c.files_removed for c in compacted),
            "maintenance/checkpoint_version": checkpointed,
            "maintenance/files_vacuumed": len(vacuumed),
        }
        if compacted:
            metadata["maintenance/compacted"] = dg.MetadataValue.md("\n".join(
                ["| partition | files before | files after | MB before | MB after |", "|---|---|---|---|---|"]
                + [f"| {c.partition or '(table)'} | {c.before.files} | {c.after.files} | {c.before.bytes / 1e6:.2f} "
                   f"| {c.after.bytes / 1e6:.2f} |" for c in compacted]))
        context.log_event(dg.AssetObservation(asset_key=key, metadata=metadata))
        context.log.info(f"{name}: {before.files} -> {after.files} files ({len(compacted)} partition(s) compacted), "
                         f"checkpoint at version {checkpointed}, {len(vacuumed)} file(s) vacuumed")
        summary[name] = {"files_before": before.files, "files_after": after.files, "vacuumed": len(vacuumed)}
    return summary


_KEPT = settings.retention_days()  # the environment's defaults, as the code location loads


class RetentionConfig(dg.Config):
    raw_events_days: int = Field(default=_KEPT["raw_events"], ge=1, description="RAW_EVENTS_RETENTION_DAYS")
    rejected_events_days: int = Field(default=_KEPT["rejected_events"], ge=1,
                                      description="REJECTED_EVENTS_RETENTION_DAYS")
    result_cache_days: int = Field(default=_KEPT["result_cache"], ge=1, description="RESULT_CACHE_RETENTION_DAYS")


@dg.op(tags={"kind": "delta"})
def apply_retention(context: dg.OpExecutionContext, config: RetentionConfig, delta: DeltaLakeStorage) -> dict:
    """Delete what is older than its retention; the files go at the next VACUUM past its retention."""
    now = datetime.now(timezone.utc)
    plan = [(RAW_EVENTS, PARTITION_COLUMN, (now - timedelta(days=config.raw_events_days)).strftime("%Y-%m-%d"), True),
            (REJECTED_EVENTS, "seen_at", now - timedelta(days=config.rejected_events_days), False),
            (RESULT_CACHE, "cached_at", now - timedelta(days=config.result_cache_days), False)]
    removed = {}
    for key, column, cutoff, partitioned in plan:
        if not delta.exists(key):
            continue
        gone = delta.delete_before(key, column, cutoff, partitioned=partitioned)
        shown = cutoff if isinstance(cutoff, str) else cutoff.isoformat(timespec="seconds")
        context.log_event(dg.AssetObservation(asset_key=key, metadata={
            "retention/cutoff": shown, "retention/rows_removed": gone.rows,
            "retention/partitions_removed": dg.MetadataValue.json(gone.partitions)}))
        context.log.info(f"{key.to_user_string()}: {gone.rows} row(s) before {shown} removed"
                         + (f" (partitions {', '.join(gone.partitions)})" if gone.partitions else ""))
        removed[key.to_user_string()] = {"rows": gone.rows, "partitions": gone.partitions, "cutoff": shown}
    return removed


@dg.job(description="Compaction, checkpoints (and on the daily run VACUUM) of the hot Delta tables.",
        tags={"team": "data-platform"})
def delta_maintenance_job():
    maintain_delta_tables()


@dg.job(description="Deletes raw events, dead letters and result-cache rows older than their retention.",
        tags={"team": "data-platform"})
def retention_job():
    apply_retention()


hourly_maintenance = dg.ScheduleDefinition(
    name="delta_maintenance_hourly", job=delta_maintenance_job, cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Compacts partitions that micro-batches split into many small files; checkpoints the logs.")
daily_vacuum = dg.ScheduleDefinition(
    name="delta_maintenance_daily_vacuum", job=delta_maintenance_job, cron_schedule="47 3 * * *",
    run_config={"ops": {"maintain_delta_tables": {"config": {"vacuum": True}}}},
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The hourly work plus VACUUM of files older than the retention.")
daily_retention = dg.ScheduleDefinition(
    name="retention_daily", job=retention_job, cron_schedule="7 4 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Deletes what is older than its retention (settings.retention_days).")
