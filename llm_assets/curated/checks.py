"""Quality gates on `curated/cases`, evaluated by the asset itself right after its write.

The asset judges each date of its run on the exact Delta versions it read (`raw/events`)
and wrote (`curated/cases`), so concurrent ingest cannot fail a check, and the checks are
evaluated in every run that materializes the asset. All three block downstream assets
(`enriched/cases` in the same run; across runs through the automation condition).
"""

import dagster as dg
import polars as pl

from llm_assets.asset_keys import CURATED_CASES, RAW_EVENTS
from llm_assets.curated import joining
from llm_assets.partitions import daily_partitions

CONTRACT = "curated_cases_contract"
UNIQUE_EVENT_ID = "curated_cases_unique_event_id"
MATCH_RAW_EVENTS = "curated_cases_match_raw_events"
EXAMPLES = 10

CURATED_CHECK_SPECS = [
    dg.AssetCheckSpec(CONTRACT, asset=CURATED_CASES, blocking=True, partitions_def=daily_partitions,
                      description="Required columns present and non-null, risk tier and exception fields valid, "
                                  "source hash present."),
    dg.AssetCheckSpec(UNIQUE_EVENT_ID, asset=CURATED_CASES, blocking=True, partitions_def=daily_partitions,
                      description="Exactly one curated row per event_id."),
    dg.AssetCheckSpec(MATCH_RAW_EVENTS, asset=CURATED_CASES, blocking=True, partitions_def=daily_partitions,
                      additional_deps=[RAW_EVENTS],
                      description="No case lost, invented or stale: every raw/events row of the day (at the "
                                  "version read) has one case curated from its current content."),
]


def contract_outcome(cases: pl.DataFrame) -> tuple[bool, dict]:
    violations = joining.contract_violations(cases)
    return not violations, {"rows": cases.height, "violations": dg.MetadataValue.json(violations)}


def unique_outcome(cases: pl.DataFrame) -> tuple[bool, dict]:
    duplicates = joining.duplicate_event_ids(cases)
    return duplicates == 0, {"rows": cases.height, "duplicate_event_ids": duplicates}


def match_raw_outcome(comparison: joining.RawComparison) -> tuple[bool, dict]:
    return comparison.passed, {
        "curated_rows": comparison.curated_rows, "raw_rows": comparison.raw_rows,
        "lost": len(comparison.lost), "invented": len(comparison.invented), "stale": len(comparison.stale),
        "examples": ", ".join((comparison.lost + comparison.invented + comparison.stale)[:EXAMPLES]) or "none",
    }
