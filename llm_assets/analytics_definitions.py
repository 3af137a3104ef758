"""The code location `llm_assets_analytics`: the dbt models over the Delta tables.

A code location of its own, owned by the analytics team, so that the main location
(`definitions.py`) never imports dagster-dbt and dbt-core: each of its runs is a new process
that loads its module, the Kafka sensor's micro-batch runs included, and that import cost every
one of them 2-3.5 s of CPU. The models' dbt sources name the main location's assets by key
(`enriched/cases`, `curated/cases`, `evaluation/*`, ...), so the UI's global lineage runs from
`raw/events` to `analytics/*` across both locations, and this location's automation sensor
follows materializations made by the other.
"""

import dagster as dg

from llm_assets.analytics import definitions as analytics
from llm_assets.execution import executor_for
from llm_assets.policies import with_policies
from llm_assets.resources.environments import current_environment, resources_for

# The dbt models' AutomationConditions (follow their upstream tables, the weekly report's cron).
analytics_automation_sensor = dg.AutomationConditionSensorDefinition(
    "analytics_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Builds the dbt models after the Delta tables they read were updated, and the weekly report.",
)

defs = dg.Definitions.merge(
    analytics.defs,
    dg.Definitions(sensors=[analytics_automation_sensor],
                   resources={"delta": resources_for(current_environment())["delta"]},
                   executor=executor_for(current_environment())),
).map_resolved_asset_specs(func=with_policies)
