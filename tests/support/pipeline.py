"""Test helpers that set up real upstream tables without going through Kafka."""

from datetime import datetime, timezone
from pathlib import Path

from llm_assets.ingest import contract
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.sample_data.generator import load_messages


def write_raw_events(delta: DeltaLakeStorage, sample_dir: Path) -> dict[str, int]:
    """Validate the sample messages with the ingest contract and MERGE them into raw/events.

    Returns the number of distinct events per `event_date`.
    """
    now = datetime.now(timezone.utc)
    rows = []
    for offset, m in enumerate(load_messages(sample_dir)):
        event = contract.validate_event(m.value)
        if isinstance(event, contract.ValidEvent):
            rows.append(contract.event_row(event, topic="events.raw", partition=0, offset=offset, ingested_at=now))
    frame = contract.events_frame(rows)
    per_day = {}
    for (day,), part in frame.group_by("event_date"):
        delta.merge("raw/events", part, ["event_id"], partition_column="event_date", partition_value=day)
        per_day[day] = part.unique("event_id").height
    return per_day
