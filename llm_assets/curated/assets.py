"""Assets of the curated layer: entity signals, upstream exceptions, and `curated/cases`."""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets import failpoints
from llm_assets.asset_keys import CURATED_CASES, ENTITY_SIGNALS, EXCEPTIONS, RAW_EVENTS
from llm_assets.automation import build_daily_derived, build_when_missing
from llm_assets.curated import checks, joining
from llm_assets.metadata import frame_table
from llm_assets.partitions import (
    check_outputs,
    daily_partitions,
    partition_check_evaluation,
    target_materializations,
)
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.domain import current_pack


class SignalSourceConfig(dg.Config):
    """Where a signal table is loaded from; empty means the domain pack's source."""

    source_path: str = Field(default="", description="JSONL, CSV, Parquet file or Delta table; empty = the domain "
                                                     "pack's `sources` entry")


def _source(config: SignalSourceConfig, pack_source: str | None) -> str | None:
    """The configured path, else the pack's source (None: the pack has none: an empty snapshot)."""
    return config.source_path or current_pack().resolve(pack_source)


def _replace_snapshot(delta: DeltaLakeStorage, key: dg.AssetKey, df, source: str | None, breakdown: str):
    """Replace a snapshot table as a whole; metadata: rows, source, and counts by `breakdown`."""
    delta.overwrite(key, df)
    counts = df.group_by(breakdown).len().sort(breakdown)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": df.height,
        "source": str(source) if source else "none (the domain pack names no such source)",
        f"rows_by_{breakdown}": frame_table(counts, limit=counts.height),
    })


@dg.asset(key=ENTITY_SIGNALS, kinds={"delta", "polars"}, group_name="curated",
          automation_condition=build_when_missing())
def entity_signals(context: dg.AssetExecutionContext, config: SignalSourceConfig, delta: DeltaLakeStorage):
    """Per-entity risk signals (device, hashed customer, partner risk tier, numeric features).

    Loaded from the domain pack's `sources.entity_signals` (JSONL, CSV, Parquet or Delta;
    `source_path` in the run config points elsewhere) and replaced as a whole each time: it is a
    snapshot.
    """
    source = _source(config, current_pack().spec.sources.entity_signals)
    return _replace_snapshot(delta, ENTITY_SIGNALS, joining.load_entity_signals(source), source, "partner_risk_tier")


@dg.asset(key=EXCEPTIONS, kinds={"delta", "polars"}, group_name="curated",
          automation_condition=build_when_missing())
def upstream_exceptions(context: dg.AssetExecutionContext, config: SignalSourceConfig, delta: DeltaLakeStorage):
    """Exceptions raised by upstream systems for individual events (amount mismatch, velocity...).

    A snapshot keyed on `event_id`, loaded from the domain pack's `sources.exceptions`.
    """
    source = _source(config, current_pack().spec.sources.exceptions)
    return _replace_snapshot(delta, EXCEPTIONS, joining.load_exceptions(source), source, "exception_type")


class CuratedCasesConfig(dg.Config):
    """How a run curates its dates."""

    full_refresh: bool = Field(
        default=False,
        description="Recompute and replace each date of the run from raw/events (backfills, changed signal "
                    "tables) instead of curating only the raw events that are new or changed.")


@dataclass
class _DateOutcome:
    """One date of a run: what was written, and the snapshot its checks judge."""

    day: str
    raw_rows: int
    plan: joining.IncrementalPlan
    written: pl.DataFrame        # the cases MERGEd (all of the date's on a full refresh)
    deleted: int
    version_written: int | None  # the commit of the run's MERGE that wrote this date; None when not written
    version_checked: int | None  # the version the checks judge: the one written, else the one read
    cases: pl.DataFrame          # curated/cases of the date at `version_checked`
    comparison: joining.RawComparison


def _stored_hashes(delta: DeltaLakeStorage, version: int | None, days: list[str]) -> tuple[pl.DataFrame, bool]:
    """curated's (event_date, event_id, source_sha256) of the dates at `version`, and whether
    the table has the hash column yet (a table written before it gets the column on the next MERGE)."""
    empty = pl.DataFrame(schema={"event_date": pl.String, "event_id": pl.String, joining.SOURCE_HASH: pl.String})
    if version is None:
        return empty, True
    scan = delta.scan(CURATED_CASES, version=version)
    has_hash = joining.SOURCE_HASH in scan.collect_schema().names()
    hash_column = pl.col(joining.SOURCE_HASH) if has_hash else pl.lit(None, dtype=pl.String).alias(joining.SOURCE_HASH)
    stored = scan.filter(pl.col("event_date").is_in(days)).select("event_date", "event_id", hash_column).collect()
    return stored, has_hash


def _raw_rows(delta: DeltaLakeStorage, days: list[str], version: int | None, event_ids: list[str] | None = None):
    """raw/events rows of the dates at `version` (optionally only some event_ids), with their source hash."""
    if version is None:
        return joining.with_source_hash(pl.DataFrame(schema={c: pl.String for c in joining.RAW_COLUMNS}))
    scan = delta.scan(RAW_EVENTS, version=version).filter(pl.col("event_date").is_in(days))
    if event_ids is not None:
        scan = scan.filter(pl.col("event_id").is_in(event_ids))
    return joining.with_source_hash(scan.select(list(joining.RAW_COLUMNS)).collect())


def _compare_with_raw(delta: DeltaLakeStorage, day: str, cases: pl.DataFrame, raw_day: pl.DataFrame):
    """The match-raw comparison on the version read; cases it cannot explain are looked up once
    more in the latest raw/events (a concurrent run of the same date may have curated newer rows)."""
    comparison = joining.compare_with_raw(cases, raw_day)
    if comparison.unexplained():
        newer = _raw_rows(delta, [day], delta.version(RAW_EVENTS), comparison.unexplained())
        comparison = joining.compare_with_raw(cases, raw_day, newer)
    return comparison


def _deleted_by_date(stored: pl.DataFrame, written: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Cases of each date (as read) that a full refresh drops: raw no longer has them."""
    return {day: stored.filter((pl.col("event_date") == day) & ~pl.col("event_id").is_in(cases["event_id"].to_list()))
            .height for day, cases in written.items()}


def _curate_dates(delta: DeltaLakeStorage, days: list[str], raw: pl.DataFrame, stored: pl.DataFrame,
                  signals: pl.DataFrame, exceptions: pl.DataFrame, *, read_version: int | None,
                  full_refresh: bool, add_hash_column: bool) -> list[_DateOutcome]:
    """Curate the run's dates: plan and join each date, MERGE the new or changed cases of every date
    in one commit (every case on a full refresh, which also drops cases raw no longer has), then read
    back, once, the versions the checks judge (a range run pays one write and one read, not one per date)."""
    raw_by = {day: raw.filter(pl.col("event_date") == day) for day in days}
    plans = {day: joining.plan_incremental(raw_by[day], stored.filter(pl.col("event_date") == day)) for day in days}
    written = {day: joining.curate_cases(raw_by[day] if full_refresh else plans[day].to_curate, signals, exceptions)
               for day in days}
    merged = days if (full_refresh and read_version is not None) else [d for d in days if not written[d].is_empty()]
    version_written, deleted = None, {day: 0 for day in days}
    if merged:
        # The dates in the predicate: concurrent runs of other dates never conflict.
        result = delta.merge(CURATED_CASES, pl.concat([written[d] for d in merged], how="diagonal_relaxed"),
                             ["event_id"], partition_column="event_date", partition_value=merged,
                             delete_unmatched=full_refresh, merge_schema=add_hash_column)
        version_written = result["version"]
        if full_refresh and result["deleted"]:
            deleted.update(_deleted_by_date(stored, {d: written[d] for d in merged}))
    failpoints.hit(failpoints.AFTER_CURATED_WRITE)
    # Dates this run wrote are judged at the version it committed, the others at the version it read.
    snapshots = {}
    for version, group in ((version_written, merged), (read_version, [d for d in days if d not in merged])):
        if version is not None and group:
            snapshot = delta.read(CURATED_CASES, partition_column="event_date", partition_values=group, version=version)
            snapshots.update({d: snapshot.filter(pl.col("event_date") == d) for d in group})
    outcomes = []
    for day in days:
        cases = snapshots.get(day, written[day].clear())
        outcomes.append(_DateOutcome(
            day, raw_by[day].height, plans[day], written[day], deleted[day],
            version_written if day in merged else None, version_written if day in merged else read_version,
            cases, _compare_with_raw(delta, day, cases, raw_by[day])))
    return outcomes


@dg.asset(
    key=CURATED_CASES,
    deps=[RAW_EVENTS, ENTITY_SIGNALS, EXCEPTIONS],
    partitions_def=daily_partitions,
    check_specs=checks.CURATED_CHECK_SPECS,
    kinds={"delta", "polars"},
    group_name="curated",
    # Signal-table changes are taken in by a full_refresh backfill: an incremental run would not see them.
    automation_condition=build_daily_derived(ignore_updates_of=[ENTITY_SIGNALS, EXCEPTIONS]),
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def curated_cases(context: dg.AssetExecutionContext, config: CuratedCasesConfig,
                  delta: DeltaLakeStorage) -> Iterator:
    """Cases per day: `raw/events` LEFT JOIN entity signals LEFT JOIN upstream exceptions.

    Missing signals default to `partner_risk_tier = unknown`, `is_exception = false`,
    `exception_type = none`; each case keeps `source_sha256`, the hash of its raw row.
    Incremental: a run curates only the raw events of its dates that are new or changed
    (anti-join on `event_id` + `source_sha256`) and MERGEs them on `event_id`, one MERGE
    for all its dates; unchanged cases are never updated. `full_refresh` recomputes and replaces
    each date (backfills, changed signal tables). A run may cover a date range (a sensor
    batch, a backfill). The checks are evaluated here, per date, right after the write, on
    the exact Delta versions read (`raw/events`) and written (`curated/cases`).
    """
    days = list(context.partition_keys)
    raw_version = delta.version(RAW_EVENTS)  # the snapshot this run curates and its checks judge
    raw = _raw_rows(delta, days, raw_version)
    signal_versions = {ENTITY_SIGNALS: delta.version(ENTITY_SIGNALS), EXCEPTIONS: delta.version(EXCEPTIONS)}
    signals, exceptions = (delta.read(key, version=v) for key, v in signal_versions.items())
    read_version = delta.version(CURATED_CASES)  # after raw's: nothing in it is newer than what this run read
    stored, has_hash = _stored_hashes(delta, read_version, days)
    outcomes = _curate_dates(delta, days, raw, stored, signals, exceptions, read_version=read_version,
                             full_refresh=config.full_refresh, add_hash_column=not has_hash)
    for outcome in outcomes:
        day = outcome.day
        context.log.info(f"curated/cases {day}: {outcome.plan.added} added, {outcome.plan.changed} changed, "
                         f"{outcome.plan.unchanged} unchanged, {outcome.deleted} deleted; raw/events v{raw_version}"
                         f" -> curated/cases " + (f"v{outcome.version_written}" if outcome.version_written is not None
                                                  else "not written"))

    metadata = _metadata(outcomes, raw_version, read_version, config.full_refresh)
    metadata.update({f"{key.path[-1]}_version_read": v for key, v in signal_versions.items() if v is not None})
    yield dg.MaterializeResult(metadata=metadata)
    yield from _check_evaluations(context, outcomes, raw_version)


def _metadata(outcomes: list[_DateOutcome], raw_version: int | None, read_version: int | None,
              full_refresh: bool) -> dict:
    written = pl.concat([o.written for o in outcomes], how="diagonal_relaxed")
    by_date = pl.DataFrame([{
        "event_date": o.day, "raw_rows": o.raw_rows, "added": o.plan.added, "changed": o.plan.changed,
        "unchanged": o.plan.unchanged, "deleted": o.deleted, "curated_rows": o.cases.height,
        "curated_version_written": o.version_written} for o in outcomes],
        schema={"event_date": pl.String, "raw_rows": pl.Int64, "added": pl.Int64, "changed": pl.Int64,
                "unchanged": pl.Int64, "deleted": pl.Int64, "curated_rows": pl.Int64,
                "curated_version_written": pl.Int64})
    partition_rows = sum(o.cases.height for o in outcomes)
    metadata = {
        "mode": "full_refresh" if full_refresh else "incremental",
        "rows_added": int(by_date["added"].sum()),
        "rows_changed": int(by_date["changed"].sum()),
        "rows_unchanged": int(by_date["unchanged"].sum()),
        **({"raw_events_version_read": raw_version} if raw_version is not None else {}),
        **({"curated_cases_version_read": read_version} if read_version is not None else {}),
        "curated_cases_versions_written": dg.MetadataValue.json(
            {o.day: o.version_written for o in outcomes}),
        "by_date": frame_table(by_date, limit=by_date.height),
        "preview": frame_table(written.select("event_id", "source_system", "partner_id", "partner_risk_tier",
                                              "is_exception", "exception_type") if written.height else written),
    }
    if len(outcomes) == 1:  # a range run's metadata is shared by its partitions: no per-partition count then
        cases = outcomes[0].cases
        metadata.update({
            "dagster/row_count": partition_rows,
            "with_entity_signals": int(cases["device_id"].is_not_null().sum()) if cases.height else 0,
            "exceptions": int(cases["is_exception"].sum()) if cases.height else 0,
            "risk_tiers": frame_table(cases.group_by("partner_risk_tier").len().sort("partner_risk_tier")
                                      if cases.height else cases, limit=10),
        })
    return metadata


def _check_evaluations(context: dg.AssetExecutionContext, outcomes: list[_DateOutcome],
                       raw_version: int | None) -> Iterator:
    """One evaluation per check and date (a range run's plain check result would have no partition),
    then the check outputs Dagster expects (downstream steps wait on the blocking ones)."""
    selected = {key.name for key in context.selected_asset_check_keys}
    targets = target_materializations(context, CURATED_CASES, [o.day for o in outcomes]) if selected else {}
    for o in outcomes:
        versions = {"partition": o.day,
                    **({"curated_cases_version": o.version_checked} if o.version_checked is not None else {}),
                    **({"raw_events_version": raw_version} if raw_version is not None else {})}
        for name, (passed, details) in ((checks.CONTRACT, checks.contract_outcome(o.cases)),
                                        (checks.UNIQUE_EVENT_ID, checks.unique_outcome(o.cases)),
                                        (checks.MATCH_RAW_EVENTS, checks.match_raw_outcome(o.comparison))):
            if name in selected:
                yield partition_check_evaluation(context, asset_key=CURATED_CASES, check_name=name,
                                                 partition=o.day, passed=passed, metadata={**versions, **details},
                                                 targets=targets)
    yield from check_outputs(context)
