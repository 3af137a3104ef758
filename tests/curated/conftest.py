"""Fixtures of the curated tests: sample data on disk and `raw/events` rows in a real Delta table."""

from datetime import datetime, timezone

import pytest

from llm_assets.ingest import contract
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.sample_data.generator import generate_sample_data, load_messages


@pytest.fixture
def curated_home(tmp_path, monkeypatch):
    """An isolated LLM_ASSETS_HOME with generated sample data (600 events over 3 days)."""
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    monkeypatch.setenv("SAMPLE_DATA_DIR", str(tmp_path / "sample_data"))
    generate_sample_data(tmp_path / "sample_data", n_events=600)
    return tmp_path


@pytest.fixture
def delta(curated_home) -> DeltaLakeStorage:
    return DeltaLakeStorage(root=str(curated_home / "delta"))


def write_raw_events(delta: DeltaLakeStorage, sample_dir) -> dict[str, int]:
    """Validate the sample messages with the ingest contract and MERGE them into raw/events."""
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
