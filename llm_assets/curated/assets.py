"""Assets of the curated layer: entity signals, upstream exceptions, and `curated/cases`."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from llm_assets.automation import build_when_missing
from llm_assets.curated import joining
from llm_assets.metadata import frame_table
from llm_assets.partitions import daily_partitions
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.settings import sample_data_dir

RAW_EVENTS = dg.AssetKey(["raw", "events"])
ENTITY_SIGNALS = dg.AssetKey(["features", "entity_signals"])
EXCEPTIONS = dg.AssetKey(["signals", "exceptions"])
CURATED_CASES = dg.AssetKey(["curated", "cases"])


class SignalSourceConfig(dg.Config):
    """Where a signal table is loaded from; empty means the sample data set."""

    source_path: str = Field(default="", description="JSONL file; defaults to the sample data folder")


def _source(config: SignalSourceConfig, default_name: str) -> Path:
    return Path(config.source_path) if config.source_path else sample_data_dir() / default_name


def _replace_snapshot(delta: DeltaLakeStorage, key: dg.AssetKey, df, source: Path, breakdown: str):
    """Replace a snapshot table as a whole; metadata: rows, source, and counts by `breakdown`."""
    delta.overwrite(key.to_user_string(), df)
    counts = df.group_by(breakdown).len().sort(breakdown)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": df.height,
        "source": str(source),
        f"rows_by_{breakdown}": frame_table(counts, limit=counts.height),
    })


@dg.asset(key=ENTITY_SIGNALS, kinds={"delta", "polars"}, group_name="curated",
          automation_condition=build_when_missing())
def entity_signals(context: dg.AssetExecutionContext, config: SignalSourceConfig, delta: DeltaLakeStorage):
    """Per-entity risk signals (device, hashed customer, partner risk tier, numeric features).

    Loaded from a JSONL export (the sample data by default; `source_path` in the run
    config points elsewhere) and replaced as a whole each time: it is a snapshot.
    """
    source = _source(config, "entity_signals.jsonl")
    return _replace_snapshot(delta, ENTITY_SIGNALS, joining.load_entity_signals(source), source, "partner_risk_tier")


@dg.asset(key=EXCEPTIONS, kinds={"delta", "polars"}, group_name="curated",
          automation_condition=build_when_missing())
def upstream_exceptions(context: dg.AssetExecutionContext, config: SignalSourceConfig, delta: DeltaLakeStorage):
    """Exceptions raised by upstream systems for individual events (amount mismatch, velocity...).

    A snapshot keyed on `event_id`, loaded from JSONL (the sample data by default).
    """
    source = _source(config, "exceptions.jsonl")
    return _replace_snapshot(delta, EXCEPTIONS, joining.load_exceptions(source), source, "exception_type")


@dg.asset(
    key=CURATED_CASES,
    deps=[RAW_EVENTS, ENTITY_SIGNALS, EXCEPTIONS],
    partitions_def=daily_partitions,
    kinds={"delta", "polars"},
    group_name="curated",
    automation_condition=dg.AutomationCondition.eager(),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def curated_cases(context: dg.AssetExecutionContext, delta: DeltaLakeStorage):
    """The day's cases: `raw/events` LEFT JOIN entity signals LEFT JOIN upstream exceptions.

    Missing signals default to `partner_risk_tier = unknown`, `is_exception = false`,
    `exception_type = none`. The partition is recomputed and replaced as a whole, so a
    late event or a re-run leaves exactly one row per raw event.
    """
    day = context.partition_key
    raw = delta.read("raw/events", partition_column="event_date", partition_values=[day])
    if raw.is_empty():
        context.log.info(f"raw/events has no rows for {day}")
        return dg.MaterializeResult(metadata={"dagster/row_count": 0})
    cases = joining.curate_cases(raw, delta.read(ENTITY_SIGNALS.to_user_string()), delta.read(EXCEPTIONS.to_user_string()))
    delta.replace_partition(CURATED_CASES.to_user_string(), cases, partition_column="event_date", partition_value=day)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": cases.height,
        "raw_rows": raw.height,
        "with_entity_signals": int(cases["device_id"].is_not_null().sum()),
        "exceptions": int(cases["is_exception"].sum()),
        "risk_tiers": frame_table(cases.group_by("partner_risk_tier").len().sort("partner_risk_tier"), limit=10),
        "preview": frame_table(cases.select("event_id", "source_system", "partner_id", "partner_risk_tier",
                                         "is_exception", "exception_type")),
    })
