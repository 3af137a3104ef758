"""The analytics domain's definitions: the dbt models and the `dbt` resource that runs them.

`delta` is bound by the root definitions (the dbt build reads the lake at its root).
"""

import dagster as dg
from dagster_dbt import DbtCliResource

from llm_assets.analytics.assets import analytics_dbt_models
from llm_assets.analytics.project import analytics_project, dbt_executable

defs = dg.Definitions(
    assets=[analytics_dbt_models],
    resources={"dbt": DbtCliResource(project_dir=analytics_project, dbt_executable=dbt_executable())},
)
