"""The llm-assets code location.

Merges each domain's own `Definitions`, registers the sensors (`sensors/`: they stand above
the domains whose jobs they launch), binds the resources of the current environment
(`LLM_ASSETS_ENV`, see `resources/environments.py`) and applies the cross-cutting policies
(`policies.py`: a freshness policy on every daily asset, an owning team per group).

The dbt models are not here: they are the code location `llm_assets_analytics`
(`analytics_definitions.py`). Every run of this location is a new process that loads this
module, the Kafka sensor's micro-batch runs included, and importing dagster-dbt (dbt-core)
cost each of them 2-3.5 s of CPU; the global lineage joins the two locations by asset key.
"""

import dagster as dg

from llm_assets.domain import current_pack

# The domain pack (`LLM_ASSETS_DOMAIN`) is validated first: a broken pack stops the code location from
# loading, and the UI shows its `DomainPackError` (one `file: field: reason` line per problem), so
# nothing is ever materialized with it.
DOMAIN_PACK = current_pack()

# Domain modules, not their `defs`: one Definitions object at module scope is what Dagster loads.
# ruff: noqa: E402
from llm_assets.curated import definitions as curated
from llm_assets.gate import definitions as gate
from llm_assets.enrichment import definitions as enrichment
from llm_assets.evaluation import definitions as evaluation
from llm_assets.execution import executor_for
from llm_assets.ingest import definitions as ingest
from llm_assets.knowledge_base import definitions as knowledge_base
from llm_assets.maintenance import definitions as maintenance
from llm_assets.models import definitions as models
from llm_assets.monitoring import definitions as monitoring
from llm_assets.policies import with_policies
from llm_assets.resources.environments import current_environment, resources_for
from llm_assets.sensors.kafka_events import kafka_events_sensor
from llm_assets.sensors.vllm_metrics import vllm_metrics_sensor

# Runs the assets' AutomationConditions (curated and enriched follow ingest eagerly); running by default.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "llm_assets_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes curated/cases and enriched/cases as soon as their upstream partitions land.",
)


defs = dg.Definitions.merge(
    ingest.defs,
    curated.defs,
    knowledge_base.defs,
    models.defs,
    enrichment.defs,
    gate.defs,
    evaluation.defs,
    monitoring.defs,
    maintenance.defs,
    dg.Definitions(sensors=[automation_sensor, kafka_events_sensor, vllm_metrics_sensor],
                   resources=resources_for(current_environment()), executor=executor_for(current_environment())),
).map_resolved_asset_specs(func=with_policies)
