"""The dev broker keeps memory only: `make dev` spools what no run has committed before it stops the
broker and produces it again at the next start, so a restart loses no acknowledged event."""

from __future__ import annotations

import pytest

from llm_assets.dev.broker import create_topics, replay_spool, spool_unconsumed, start_broker
from llm_assets.resources.kafka import KafkaResource

pytestmark = pytest.mark.integration


def test_events_a_stopping_broker_held_beyond_the_committed_offsets_reach_the_next_broker(tmp_path):
    spool = tmp_path / "spool" / "events.raw.jsonl"
    first = start_broker()
    try:
        create_topics(first.bootstrap, {"events.raw": 2})
        kafka = KafkaResource(bootstrap_servers=first.bootstrap)
        kafka.produce_batch("events.raw", [(f"e{i}", f'{{"n": {i}}}') for i in range(10)] + [(None, None)])
        committed = {p: 1 for p in kafka.topic_partitions("events.raw")}  # one message per partition ingested
        kafka.commit_offsets("llm-assets-ingest", "events.raw", committed)
        assert spool_unconsumed(first.bootstrap, "events.raw", "llm-assets-ingest", spool) == 11 - 2
    finally:
        first.stop()

    second = start_broker(first.port)  # the same address, an empty log
    try:
        create_topics(second.bootstrap, {"events.raw": 2})
        assert replay_spool(second.bootstrap, "events.raw", spool) == 9
        assert not spool.exists()
        kafka = KafkaResource(bootstrap_servers=second.bootstrap)
        values = []
        for chunk in kafka.read("events.raw", {p: None for p in kafka.topic_partitions("events.raw")}):
            values += list(zip(chunk.keys, chunk.values))
        assert len(values) == 9 and (None, None) in values
        assert replay_spool(second.bootstrap, "events.raw", spool) == 0  # nothing kept: nothing produced
    finally:
        second.stop()


def test_make_devs_supervisor_starts_a_dead_local_service_again_on_the_same_address(tmp_path, monkeypatch):
    from llm_assets.dev.dev_command import local_services
    from llm_assets.dev.process import stop_all
    from llm_assets.knowledge_base.retrieval import current_kb_index_version
    from llm_assets.resources.milvus import MilvusResource

    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("MILVUS_URI", raising=False)
    processes = []
    try:
        with local_services(processes, quiet=True) as services:
            assert services.restart_dead() == []  # all alive: nothing to do
            milvus_uri, bootstrap = services.milvus.uri, services.broker.bootstrap
            services.milvus.process.kill()
            services.broker.process.kill()
            said = services.restart_dead()
            assert len(said) == 2 and "tansu" in said[0] and "milvus-lite" in said[1]
            assert services.milvus.uri == milvus_uri and services.broker.bootstrap == bootstrap
            assert current_kb_index_version(MilvusResource(uri=milvus_uri)) is None  # it answers
            assert "events.raw" in KafkaResource(bootstrap_servers=bootstrap).admin().list_topics(timeout=10).topics
            assert services.milvus.process in processes and services.broker.process in processes
    finally:
        stop_all(processes)
