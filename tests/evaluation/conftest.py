"""Fixtures of the evaluation tests: a Delta root in a temporary folder and its resource."""

from __future__ import annotations

import pytest

from llm_assets.resources.delta import DeltaLakeStorage


@pytest.fixture
def delta(tmp_path) -> DeltaLakeStorage:
    return DeltaLakeStorage(root=str(tmp_path / "delta"))
