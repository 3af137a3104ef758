"""Quality gates on `curated/cases`, evaluated per partition (they read the partition
themselves: the dagster-deltalake IO manager checks the wrong partition)."""

import dagster as dg

from llm_assets.curated import joining
from llm_assets.curated.assets import CURATED_CASES
from llm_assets.partitions import daily_partitions
from llm_assets.resources.delta import DeltaLakeStorage


def _cases(context: dg.AssetCheckExecutionContext, delta: DeltaLakeStorage):
    return delta.read(CURATED_CASES.to_user_string(), partition_column="event_date",
                      partition_values=[context.partition_key])


@dg.asset_check(asset=CURATED_CASES, partitions_def=daily_partitions, blocking=True,
                description="Required columns present and non-null, risk tier and exception fields valid.")
def curated_cases_contract(context: dg.AssetCheckExecutionContext, delta: DeltaLakeStorage) -> dg.AssetCheckResult:
    cases = _cases(context, delta)
    violations = joining.contract_violations(cases)
    return dg.AssetCheckResult(
        passed=not violations,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows": cases.height, "violations": dg.MetadataValue.json(violations)},
    )


@dg.asset_check(asset=CURATED_CASES, partitions_def=daily_partitions, blocking=True,
                description="Exactly one curated row per event_id.")
def curated_cases_unique_event_id(context: dg.AssetCheckExecutionContext, delta: DeltaLakeStorage) -> dg.AssetCheckResult:
    cases = _cases(context, delta)
    duplicates = cases.height - cases["event_id"].n_unique() if cases.height else 0
    return dg.AssetCheckResult(passed=duplicates == 0, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"rows": cases.height, "duplicate_event_ids": duplicates})


def row_count_result(curated_rows: int, raw_rows: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=curated_rows == raw_rows, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"curated_rows": curated_rows, "raw_rows": raw_rows,
                                         "difference": curated_rows - raw_rows})


@dg.asset_check(asset=CURATED_CASES, partitions_def=daily_partitions, blocking=True,
                additional_deps=[dg.AssetKey(["raw", "events"])],
                description="No case lost or invented: curated rows equal raw/events rows for the day.")
def curated_cases_match_raw_events(context: dg.AssetCheckExecutionContext, delta: DeltaLakeStorage) -> dg.AssetCheckResult:
    day = context.partition_key
    curated = delta.count(CURATED_CASES.to_user_string(), partition_column="event_date", partition_value=day)
    raw = delta.count("raw/events", partition_column="event_date", partition_value=day)
    return row_count_result(curated, raw)
