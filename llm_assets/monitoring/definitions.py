"""The monitoring domain's definitions (resources are bound by the root definitions)."""

import dagster as dg

from llm_assets.monitoring import assets

defs = dg.Definitions(assets=[assets.drift_report, assets.case_tickets])
