"""Run the Kafka ingest without a daemon: tick the sensor, execute its runs, until it skips.

`drain_topic` does what the Dagster daemon does, in this process: it evaluates
`kafka_events_sensor` tick by tick with the cursor it returned, executes each requested
run in-process on the given instance (a partition key range run included, through the same
range tags the daemon reads), and stops when the sensor skips. The demo, the tests and the
benchmark use it; the `dev` command runs the real daemon instead.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import dagster as dg

from llm_assets.ingest.assets import ingest_events_job, ingest_rejected_events_job
from llm_assets.ingest.definitions import defs as ingest_defs
from llm_assets.resources.kafka import KafkaIngestSettings
from llm_assets.sensors.kafka_events import kafka_events_sensor

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ingest_definitions(resources: Mapping[str, Any]) -> dg.Definitions:
    """The ingest assets, checks, jobs and sensor with `resources` bound (sensor contexts need them).

    `resources` needs `kafka` and `delta`; `kafka_ingest` defaults to `KafkaIngestSettings()`.
    """
    return dg.Definitions.merge(ingest_defs, dg.Definitions(sensors=[kafka_events_sensor],
                                                            resources=with_ingest_settings(resources)))


def with_ingest_settings(resources: Mapping[str, Any]) -> dict[str, Any]:
    return {"kafka_ingest": KafkaIngestSettings(), **resources}


def execute_run_request(defs: dg.Definitions, request: dg.RunRequest, instance: dg.DagsterInstance, *,
                        quiet: bool = False) -> dg.ExecuteInProcessResult:
    """Execute one sensor `RunRequest` in-process as the daemon would launch it."""
    run_config = dict(request.run_config)
    if quiet:
        run_config = {**run_config, **QUIET_RUN_CONFIG}
    return defs.resolve_job_def(request.job_name).execute_in_process(
        run_config=run_config, partition_key=request.partition_key, tags=request.tags, instance=instance,
        asset_selection=request.asset_selection, raise_on_error=False)


def tick(instance: dg.DagsterInstance, resources: Mapping[str, Any], cursor: str | None = None,
         defs: dg.Definitions | None = None):
    """One evaluation of `kafka_events_sensor`, as the daemon would run it (its run requests, cursor, skip)."""
    resources = with_ingest_settings(resources)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                      sensor_name=kafka_events_sensor.name,
                                      definitions=defs or ingest_definitions(resources))
    return kafka_events_sensor.evaluate_tick(context)


def drain_topic(instance: dg.DagsterInstance, resources: Mapping[str, Any], *, cursor: str | None = None,
                max_ticks: int = 100, quiet: bool = False, defs: dg.Definitions | None = None) -> dict[str, Any]:
    """Tick the sensor and execute its runs until it skips (or `max_ticks`).

    `resources` needs `kafka` and `delta` (and `kafka_ingest` for another topic or limits);
    `quiet` keeps the runs' console logs to warnings. `defs`: the whole code location, so that
    the sensor's runs take their dates from raw through curated to enriched as the daemon's do;
    by default the ingest assets alone. Returns a summary: ticks, runs (by job),
    failed run keys, requested run keys, the last skip reason, the final cursor (pass it
    back in to resume, as the daemon would after a restart) and the seconds spent in ticks
    and in runs.
    """
    resources = with_ingest_settings(resources)
    defs = defs or ingest_definitions(resources)
    summary: dict[str, Any] = {"ticks": 0, "runs": {ingest_events_job.name: 0, ingest_rejected_events_job.name: 0},
                               "run_keys": [], "failed_run_keys": [], "skip_reason": None, "cursor": cursor,
                               "tick_seconds": 0.0, "run_seconds": 0.0}
    for _ in range(max_ticks):
        started = time.perf_counter()
        result = tick(instance, resources, cursor, defs)
        summary["tick_seconds"] += time.perf_counter() - started
        summary["ticks"] += 1
        cursor = summary["cursor"] = result.cursor
        if not result.run_requests:
            summary["skip_reason"] = result.skip_message
            break
        for request in result.run_requests:
            started = time.perf_counter()
            outcome = execute_run_request(defs, request, instance, quiet=quiet)
            summary["run_seconds"] += time.perf_counter() - started
            summary["runs"][request.job_name] += 1
            summary["run_keys"].append(request.run_key)
            if not outcome.success:
                summary["failed_run_keys"].append(request.run_key)
    return summary
