"""The live sample stream of `make dev` never reuses an event id, across batches and restarts."""

import json
import time
from datetime import date

import pytest

from llm_assets.dev.samples import LiveSampleStream, live_batch, new_stream_nonce
from llm_assets.resources.kafka import KafkaResource

pytestmark = pytest.mark.integration


def _ids_and_values(messages) -> dict[str, set[bytes]]:
    """Event id -> the distinct values sent with it (valid and duplicate deliveries)."""
    found: dict[str, set[bytes]] = {}
    for m in messages:
        if m.kind in ("valid", "duplicate"):
            found.setdefault(json.loads(m.value)["event_id"], set()).add(m.value)
    return found


def test_restarted_streams_and_later_batches_never_share_an_event_id():
    day = date(2026, 11, 18)
    first, second = new_stream_nonce(), new_stream_nonce()
    assert first != second
    seen: dict[str, set[bytes]] = {}
    for nonce in (first, second):
        for batch in range(1, 31):
            ids = _ids_and_values(live_batch(nonce, batch, day))
            assert ids and not set(ids) & set(seen), (nonce, batch)
            seen.update(ids)
    # A deliberate duplicate delivery repeats its own event, never another one's id.
    assert all(len(values) == 1 for values in seen.values())
    malformed = sum(m.kind.startswith("malformed") for m in live_batch(first, 5, day))
    assert malformed == 1 and not any(m.kind.startswith("malformed") for m in live_batch(first, 4, day))


def _event_ids(values) -> set[str]:
    ids = set()
    for value in values:
        try:
            ids.add(json.loads(value)["event_id"])
        except (ValueError, KeyError, TypeError):
            continue  # the malformed message of every fifth batch
    return ids


def test_a_restarted_live_stream_publishes_only_new_event_ids(kafka_broker, make_topic):
    topic = make_topic(partitions=1)
    kafka = KafkaResource(bootstrap_servers=kafka_broker)
    published: list[set[str]] = []
    offset = 0
    for _ in range(2):  # `make dev`, Ctrl-C, `make dev` again
        stream = LiveSampleStream(kafka, topic, interval_s=0.1).start()
        while stream.batches < 3:
            time.sleep(0.05)
        stream.stop()
        read = kafka.read(topic, {0: offset}, idle_timeout_s=1.0)
        published.append(_event_ids(v for chunk in read for v in chunk.values))
        offset = read.progress.next_offsets[0]
    assert published[0] and published[1] and not published[0] & published[1]
