"""`KafkaResource` against a real tansu broker."""

from __future__ import annotations

import pytest

from llm_assets.dev.process import free_port
from llm_assets.resources.kafka import (
    KafkaResource,
    KafkaUnavailableError,
    OffsetRange,
    OffsetRangeUnavailableError,
    TopicNotFoundError,
)
from tests.support.kafka_helpers import iter_range_batches, read_range

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka(kafka_broker):
    return KafkaResource(bootstrap_servers=kafka_broker)


def test_read_range_returns_exactly_the_requested_offsets(kafka, make_topic):
    topic = make_topic()
    assert kafka.produce_batch(topic, [(f"k{i}", f"v{i}") for i in range(20)]) == 20
    records = read_range(kafka, topic, 0, 5, 12)
    assert [r.offset for r in records] == list(range(5, 12))
    assert [r.value for r in records] == [f"v{i}".encode() for i in range(5, 12)]
    batches = list(iter_range_batches(kafka, topic, [OffsetRange(0, 0, 20)], batch_size=8))
    assert sum(len(b) for b in batches) == 20 and all(len(b) <= 8 for b in batches)


def test_a_range_past_the_log_end_raises_instead_of_returning_a_partial_range(kafka, make_topic):
    topic = make_topic()
    kafka.produce_batch(topic, [("k", "v")])
    with pytest.raises(OffsetRangeUnavailableError, match="ends at offset 1"):
        read_range(kafka, topic, 0, 0, 3)


def test_missing_topic_is_a_clear_error_and_is_not_auto_created(kafka):
    with pytest.raises(TopicNotFoundError, match="does not exist"):
        kafka.topic_partitions("never-created-topic")
    with pytest.raises(TopicNotFoundError):
        kafka.topic_partitions("never-created-topic")


def test_unreachable_broker_is_a_clear_error():
    down = KafkaResource(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_s=1)
    with pytest.raises(KafkaUnavailableError, match="unreachable"):
        down.topic_partitions("events.raw")


def test_producers_are_idempotent_whatever_the_config_says(kafka, make_topic):
    overridden = KafkaResource(bootstrap_servers=kafka.bootstrap_servers, client_config={"enable.idempotence": "false"})
    assert overridden.producer_settings()["enable.idempotence"] is True
    assert overridden.producer_settings(**{"enable.idempotence": False})["enable.idempotence"] is True
    topic = make_topic()
    assert overridden.produce_batch(topic, [("k", "v")]) == 1
    assert read_range(kafka, topic, 0, 0, 1)[0].value == b"v"


def test_commits_need_no_group_join(kafka, make_topic):
    topic = make_topic(partitions=2)
    kafka.commit_offsets("some-group", topic, {0: 3, 1: 7})
    assert kafka.committed_offsets("some-group", topic, [0, 1]) == {0: 3, 1: 7}
