"""Partition definitions shared by every daily asset."""

from __future__ import annotations

import dagster as dg

PARTITIONS_START = "2025-01-01"

# UTC days of `event_ts`; end_offset=1 so today's events have a partition as they arrive.
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC", end_offset=1)

# One key per candidate model version (never per case).
model_versions = dg.DynamicPartitionsDefinition(name="model_versions")
