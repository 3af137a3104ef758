"""Partition definitions shared by every daily asset, and per-partition check results.

Dagster (1.13) attributes an `AssetCheckResult` of a partition-range run to no partition
at all (ARCHITECTURE section 8). A step that covers a range reports one
`AssetCheckEvaluation` per partition instead, tied to that partition's materialization:
that is what the UI and `AutomationCondition.all_deps_blocking_checks_passed()` read.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # not re-exported by dagster
    AssetCheckEvaluationTargetMaterializationData,
)

PARTITIONS_START = "2025-01-01"

# UTC days of `event_ts`; end_offset=1 so today's events have a partition as they arrive.
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC", end_offset=1)

# One key per candidate model version (never per case).
model_versions = dg.DynamicPartitionsDefinition(name="model_versions")


def _target_materialization(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
                            asset_key: dg.AssetKey, partition: str):
    """This run's latest materialization of the partition (else the latest one): what the check judged.

    Read from the asset index (never the run's own event log: a sharded storage numbers those apart).
    """
    recent = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=10).records
    if not recent:
        return None
    mine = [r for r in recent if r.run_id == context.run.run_id]  # `run`: both contexts have it
    target = mine[0] if mine else recent[0]  # newest first
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=target.storage_id, run_id=target.run_id, timestamp=target.timestamp)


def target_materializations(context: dg.AssetExecutionContext, asset_key: dg.AssetKey,
                            partitions: Sequence[str]) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """`_target_materialization` of many partitions in one query (a range run judges every check of
    every date: one query each cost about 70 ms, 300 of them in a 30-day backfill). Partitions the
    query did not return are left out: `partition_check_evaluation` looks those up one by one."""
    if not partitions:
        return {}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=list(partitions)),
        limit=10 * len(partitions)).records  # newest first: this run's own come first
    found: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    for record in records:
        partition = record.partition_key
        if partition is None or (partition in found and found[partition].run_id == context.run.run_id):
            continue
        if partition not in found or record.run_id == context.run.run_id:
            found[partition] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
    return found


def partition_check_evaluation(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
    *,
    asset_key: dg.AssetKey,
    check_name: str,
    partition: str,
    passed: bool,
    metadata: Mapping[str, object],
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    blocking: bool = True,
    targets: Mapping[str, AssetCheckEvaluationTargetMaterializationData] | None = None,
) -> dg.AssetCheckEvaluation:
    """One partition's check result, linked to the materialization it judged.

    Yield it after the asset's `MaterializeResult` (so this run's materialization exists);
    a failed blocking ERROR evaluation fails the step, as a returned check result would.
    `targets` (from `target_materializations`) saves a query per evaluation in range runs.
    """
    target = (targets or {}).get(partition) or _target_materialization(context, asset_key, partition)
    return dg.AssetCheckEvaluation(
        asset_key=asset_key, check_name=check_name, passed=passed, metadata=dict(metadata),
        severity=severity, blocking=blocking, partition=partition, target_materialization_data=target)


def check_outputs(context: dg.AssetExecutionContext):
    """The empty outputs Dagster expects for each selected check of an asset that reports its checks
    as `AssetCheckEvaluation`s: downstream steps wait on the blocking ones."""
    for key in context.selected_asset_check_keys:
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
