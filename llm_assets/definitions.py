"""The llm-assets code location.

Merges each domain's own `Definitions`, registers the sensors (`sensors/`: they stand above
the domains whose jobs they launch), binds the resources of the current environment
(`LLM_ASSETS_ENV`, see `resources/environments.py`) and applies cross-cutting policy in
one place: a freshness policy on every daily asset and an owning team per group.
"""

from datetime import timedelta

import dagster as dg

# Domain modules, not their `defs`: one Definitions object at module scope is what Dagster loads.
from llm_assets.analytics import definitions as analytics
from llm_assets.curated import definitions as curated
from llm_assets.distillation import definitions as distillation
from llm_assets.enrichment import definitions as enrichment
from llm_assets.evaluation import definitions as evaluation
from llm_assets.execution import executor_for
from llm_assets.ingest import definitions as ingest
from llm_assets.knowledge_base import definitions as knowledge_base
from llm_assets.models import definitions as models
from llm_assets.monitoring import definitions as monitoring
from llm_assets.partitions import daily_partitions
from llm_assets.resources.environments import current_environment, resources_for
from llm_assets.sensors.kafka_events import kafka_events_sensor
from llm_assets.sensors.vllm_metrics import vllm_metrics_sensor

# A daily partition that has not been refreshed for a day and a half is late for the analysts.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=36), warn_window=timedelta(hours=26))


# Runs the assets' AutomationConditions (curated and enriched follow ingest eagerly); running by default.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "llm_assets_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes curated/cases and enriched/cases as soon as their upstream partitions land.",
)


# Who answers for each group (shown on every asset in the UI; the lineage filters by owner).
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


def _with_policies(spec: dg.AssetSpec) -> dg.AssetSpec:
    if spec.partitions_def == daily_partitions and spec.freshness_policy is None:
        spec = spec.replace_attributes(freshness_policy=DAILY_FRESHNESS)
    if not spec.owners and spec.group_name in OWNERS_BY_GROUP:
        spec = spec.replace_attributes(owners=OWNERS_BY_GROUP[spec.group_name])
    return spec


defs = dg.Definitions.merge(
    ingest.defs,
    curated.defs,
    knowledge_base.defs,
    models.defs,
    enrichment.defs,
    distillation.defs,
    evaluation.defs,
    monitoring.defs,
    analytics.defs,
    dg.Definitions(sensors=[automation_sensor, kafka_events_sensor, vllm_metrics_sensor],
                   resources=resources_for(current_environment()), executor=executor_for(current_environment())),
).map_resolved_asset_specs(func=_with_policies)
