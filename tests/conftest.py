"""Shared test fixtures: one real tansu broker per test session, a fresh topic per test."""

from __future__ import annotations

import re
import uuid
from typing import Callable, Iterator

import pytest

from llm_assets.dev.broker import create_topics, start_broker


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
