"""Shared test fixtures: one real tansu broker per test session, a fresh topic per test."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from llm_assets.dev.broker import create_topics, start_broker


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`tests/suite.sh`), each worker gets an `LLM_ASSETS_HOME` of its own below
    the one given, so tests that use the default home never share one with a test running beside them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        home = Path(os.environ.get("LLM_ASSETS_HOME", ".llm_assets")).resolve() / f"xdist-{worker}"
        os.environ["LLM_ASSETS_HOME"] = str(home)


# The modules whose set-up seeds a lake (signals, KB index, gate training) or a Postgres instance: 30 to
# 60 s each (`make test`'s durations). Collected first, so that under `--dist loadfile` the two workers
# start on them and finish together instead of one worker running them alone at the end.
SLOW_MODULES_FIRST = ("tests/enrichment/", "tests/deploy/", "tests/evaluation/test_golden_cases.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def slow_first(item: pytest.Item) -> int:
        path = Path(str(item.fspath)).relative_to(config.rootpath).as_posix()
        return 0 if path.startswith(SLOW_MODULES_FIRST) else 1

    items.sort(key=slow_first)  # stable: the order within each part stays pytest's


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """Bootstrap string of a tansu broker (memory storage) started for this session."""
    broker = start_broker()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def unique_topic_name(hint: str) -> str:
    return f"{re.sub(r'[^a-zA-Z0-9._-]', '-', hint)[:60]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_topic(kafka_broker: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """`make_topic(partitions=1)` creates a uniquely named topic on the session broker."""

    def _make(partitions: int = 1, hint: str | None = None) -> str:
        name = unique_topic_name(hint or request.node.name)
        create_topics(kafka_broker, {name: partitions})
        return name

    return _make
