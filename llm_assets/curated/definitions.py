"""The curated domain's definitions (resources are bound by the root definitions)."""

import dagster as dg

from llm_assets.curated import assets, checks

defs = dg.Definitions(
    assets=[assets.entity_signals, assets.upstream_exceptions, assets.curated_cases],
    asset_checks=[checks.curated_cases_contract, checks.curated_cases_unique_event_id,
                  checks.curated_cases_match_raw_events],
)
