"""Fixtures of the curated tests: sample data on disk and `raw/events` rows in a real Delta table."""

import pytest

from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data


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
