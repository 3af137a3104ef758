"""The model lifecycle's definitions (resources are bound by the root definitions)."""

import dagster as dg

from llm_assets.models import assets, checks, sensors

defs = dg.Definitions(assets=[assets.models_evaluation, assets.models_production],
                      asset_checks=[checks.no_regression_vs_production],
                      sensors=[sensors.model_registry_sensor])
