"""The monitoring domain's definitions (resources are bound by the root definitions)."""

import dagster as dg

from llm_assets.monitoring import assets
from llm_assets.monitoring.gate_precision import gate_precision

defs = dg.Definitions(assets=[assets.drift_report, assets.case_tickets, gate_precision])
