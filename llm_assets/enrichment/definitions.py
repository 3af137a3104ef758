"""The enrichment domain's definitions (resources are bound by the root definitions)."""

import dagster as dg

from llm_assets.enrichment import assets

defs = dg.Definitions(assets=[assets.enriched_cases])
