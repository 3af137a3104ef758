"""Policies applied across the code locations: a freshness policy on every daily asset and an
owning team per group (shown on every asset in the UI; the lineage filters by owner)."""

from datetime import timedelta

import dagster as dg

from llm_assets.partitions import daily_partitions

# A daily partition that has not been refreshed for a day and a half is late for the analysts.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=36), warn_window=timedelta(hours=26))

OWNERS_BY_GROUP = {
    "ingest": ["team:data-platform"],
    "curated": ["team:data-platform"],
    "knowledge_base": ["team:ml-platform"],
    "models": ["team:ml-platform"],
    "enrichment": ["team:ml-platform"],
    "evaluation": ["team:case-operations"],
    "monitoring": ["team:ml-platform"],
    "analytics": ["team:analytics"],
}


def with_policies(spec: dg.AssetSpec) -> dg.AssetSpec:
    """`spec` with the daily freshness policy (daily assets) and its group's owners, unless it has its own."""
    if spec.partitions_def == daily_partitions and spec.freshness_policy is None:
        spec = spec.replace_attributes(freshness_policy=DAILY_FRESHNESS)
    if not spec.owners and spec.group_name in OWNERS_BY_GROUP:
        spec = spec.replace_attributes(owners=OWNERS_BY_GROUP[spec.group_name])
    return spec
