"""The evaluation domain's definitions (resources are bound by the root definitions).

The rating page is not a Dagster object: it is served beside the UI (`serve_rating_page`).
"""

import dagster as dg

from llm_assets.evaluation import assets, golden_cases

defs = dg.Definitions(assets=[assets.evaluation_samples, assets.evaluation_ratings, assets.evaluation_quality_metrics,
                              golden_cases.evaluation_golden_cases])
