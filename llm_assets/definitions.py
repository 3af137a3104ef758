"""The llm-assets code location.

Merges each domain's own `Definitions`, binds the resources of the current environment
(`LLM_ASSETS_ENV`, see `resources/environments.py`) and applies cross-cutting policy in
one place: a freshness policy on every daily asset.
"""

from datetime import timedelta

import dagster as dg

from llm_assets.curated.definitions import defs as curated_defs
from llm_assets.enrichment.definitions import defs as enrichment_defs
from llm_assets.ingest.definitions import defs as ingest_defs
from llm_assets.knowledge_base.definitions import defs as knowledge_base_defs
from llm_assets.partitions import daily_partitions
from llm_assets.resources.environments import current_environment, resources_for

# A daily partition that has not been refreshed for a day and a half is late for the analysts.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=36), warn_window=timedelta(hours=26))


def _with_daily_freshness(spec: dg.AssetSpec) -> dg.AssetSpec:
    if spec.partitions_def == daily_partitions and spec.freshness_policy is None:
        return spec.replace_attributes(freshness_policy=DAILY_FRESHNESS)
    return spec


defs = dg.Definitions.merge(
    ingest_defs,
    curated_defs,
    knowledge_base_defs,
    enrichment_defs,
    dg.Definitions(resources=resources_for(current_environment())),
).map_resolved_asset_specs(func=_with_daily_freshness)
