"""Fixtures of the analytics tests: an isolated LLM_ASSETS_HOME and its Delta root."""

from pathlib import Path

import pytest

from llm_assets.resources.delta import DeltaLakeStorage


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def delta(home) -> DeltaLakeStorage:
    return DeltaLakeStorage(root=str(home / "delta"))

