"""The ingest domain's definitions (resources are bound by `llm_assets/definitions.py`)."""

from __future__ import annotations

import dagster as dg

from llm_assets.ingest.assets import ingest_events_job, ingest_kafka_batch, ingest_rejected_events_job
from llm_assets.ingest.checks import raw_events_checks
from llm_assets.sensors.kafka_events import kafka_events_sensor

defs = dg.Definitions(
    assets=[ingest_kafka_batch],
    asset_checks=raw_events_checks,
    jobs=[ingest_events_job, ingest_rejected_events_job],
    sensors=[kafka_events_sensor],
)
