"""The ingest domain's definitions: assets (with their checks) and jobs.

`kafka_events_sensor` (sensors/) targets these jobs and is registered by the root
`llm_assets/definitions.py`, which also binds the resources.
"""

from __future__ import annotations

import dagster as dg

from llm_assets.ingest.assets import ingest_events_job, ingest_kafka_batch, ingest_rejected_events_job

defs = dg.Definitions(
    assets=[ingest_kafka_batch],
    jobs=[ingest_events_job, ingest_rejected_events_job],
)
