"""Run the Kafka ingest without a daemon: publish sample messages, then drain the topic.

`drain_topic` does what the Dagster daemon does, in this process: it evaluates the sensor
tick by tick with the cursor it returned, executes each requested run in-process on the
given instance (a partition key range run included, through the same range tags the
daemon reads), and stops when the sensor skips. The demo, the tests and the benchmark
use it; the `dev` command uses the real daemon instead.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import dagster as dg

from llm_assets.ingest.assets import ingest_events_job, ingest_kafka_batch, ingest_rejected_events_job
from llm_assets.ingest.checks import raw_events_checks
from llm_assets.resources.kafka import KafkaResource
from llm_assets.sample_data.generator import SampleMessage
from llm_assets.sensors.kafka_events import kafka_events_sensor


def produce_sample_messages(kafka: KafkaResource | str, topic: str,
                            messages: Iterable[SampleMessage | tuple[bytes | None, bytes | None]]) -> int:
    """Publish messages (sample messages or `(key, value)` pairs) idempotently; returns how many."""
    resource = kafka if isinstance(kafka, KafkaResource) else KafkaResource(bootstrap_servers=kafka)
    pairs = ((m.key, m.value) if isinstance(m, SampleMessage) else m for m in messages)
    return resource.produce_batch(topic, pairs)


def ingest_definitions(resources: Mapping[str, Any],
                       sensor: dg.SensorDefinition | None = None) -> dg.Definitions:
    """The ingest assets, checks, jobs and sensor with `resources` bound (sensor contexts need them)."""
    return dg.Definitions(assets=[ingest_kafka_batch], asset_checks=raw_events_checks,
                          jobs=[ingest_events_job, ingest_rejected_events_job],
                          sensors=[sensor or kafka_events_sensor], resources=dict(resources))


QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def execute_run_request(defs: dg.Definitions, request: dg.RunRequest, instance: dg.DagsterInstance, *,
                        quiet: bool = False) -> dg.ExecuteInProcessResult:
    """Execute one sensor `RunRequest` in-process as the daemon would launch it."""
    run_config = dict(request.run_config)
    if quiet:
        run_config = {**run_config, **QUIET_RUN_CONFIG}
    return defs.resolve_job_def(request.job_name).execute_in_process(
        run_config=run_config, partition_key=request.partition_key, tags=request.tags, instance=instance,
        asset_selection=request.asset_selection, raise_on_error=False)


def drain_topic(instance: dg.DagsterInstance, resources: Mapping[str, Any], *,
                sensor: dg.SensorDefinition | None = None, cursor: str | None = None,
                max_ticks: int = 100, quiet: bool = False) -> dict[str, Any]:
    """Tick the sensor and execute its runs until it skips (or `max_ticks`).

    `resources` needs `kafka` and `delta`; `quiet` keeps the runs' console logs to warnings.
    Returns a summary: ticks, runs (by job), failed run keys, requested run keys, the last
    skip reason and the final cursor (pass it back in to resume, as the daemon would after a
    restart).
    """
    sensor = sensor or kafka_events_sensor
    defs = ingest_definitions(resources, sensor)
    summary: dict[str, Any] = {"ticks": 0, "runs": {ingest_events_job.name: 0, ingest_rejected_events_job.name: 0},
                               "run_keys": [], "failed_run_keys": [], "skip_reason": None, "cursor": cursor}
    for _ in range(max_ticks):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=dict(resources),
                                          sensor_name=sensor.name, definitions=defs)
        tick = sensor.evaluate_tick(context)
        summary["ticks"] += 1
        cursor = tick.cursor
        summary["cursor"] = cursor
        if not tick.run_requests:
            summary["skip_reason"] = tick.skip_message
            break
        for request in tick.run_requests:
            result = execute_run_request(defs, request, instance, quiet=quiet)
            summary["runs"][request.job_name] += 1
            summary["run_keys"].append(request.run_key)
            if not result.success:
                summary["failed_run_keys"].append(request.run_key)
    return summary
