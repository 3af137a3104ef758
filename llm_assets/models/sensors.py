"""`model_registry_sensor`: every version in the registry file gets its `models/evaluation` partition.

It only adds partitions (cheap: it reads a YAML file); evaluating a version calls its server,
so that is started on purpose (the UI, `llm-assets models ...`). A registry that does not
parse fails the tick, which shows the error in the UI.
"""

import dagster as dg

from llm_assets.models.registry import load_registry
from llm_assets.partitions import model_versions


def new_versions(registry_names: list[str], existing: list[str]) -> list[str]:
    """Registry names without a partition yet, in registry order."""
    known = set(existing)
    return [name for name in registry_names if name not in known]


def build_model_registry_sensor(registry_path: str | None = None) -> dg.SensorDefinition:
    @dg.sensor(name="model_registry_sensor", minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Adds a models/evaluation partition for each version in the model registry.")
    def model_registry_sensor(context: dg.SensorEvaluationContext):
        names = list(load_registry(registry_path))
        new = new_versions(names, context.instance.get_dynamic_partitions(model_versions.name))
        if not new:
            return dg.SkipReason(f"all {len(names)} registered versions have a partition")
        context.log.info(f"new model versions: {new}")
        return dg.SensorResult(dynamic_partitions_requests=[model_versions.build_add_request(new)])

    return model_registry_sensor


model_registry_sensor = build_model_registry_sensor()
