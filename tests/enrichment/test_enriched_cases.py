"""`enriched/cases` end to end on real Delta, Milvus Lite, the packaged embedding model, the tansu
broker, and the OpenAI-compatible test server (the one stand-in for vLLM)."""

import json
import os
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from llm_assets import settings
from llm_assets.enrichment import audit
from llm_assets.local_broker import create_topics
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.kafka import KafkaResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource
from llm_assets.sample_data.generator import generate_sample_data, load_messages
from tests.support.pipeline import materialize_keys, write_raw_events

UNPARTITIONED = ["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index",
                 "models/embedding_gate"]


@pytest.fixture(scope="module")
def home(tmp_path_factory, kafka_broker):
    """Sample data for two days, raw/events, signals, KB index, gate and curated/cases, built once."""
    root = tmp_path_factory.mktemp("enriched")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_ASSETS_HOME", str(root))
        mp.setenv("SAMPLE_DATA_DIR", str(root / "sample_data"))
        mp.delenv("AUDIT_SIGNING_KEY", raising=False)
        mp.delenv("LLM_ASSETS_ENV", raising=False)
        generate_sample_data(root / "sample_data", n_events=80, days=2)
        create_topics(kafka_broker, {settings.ENRICHED_TOPIC: 3})
        resources = base_resources(root, kafka_broker)
        per_day = write_raw_events(resources["delta"], root / "sample_data")
        assert materialize_keys(resources, UNPARTITIONED).success
        for day in per_day:
            assert materialize_keys(resources, ["curated/cases"], partition_key=day).success
        yield root, per_day


def base_resources(root: Path, bootstrap: str, llm: LLMResource | None = None) -> dict:
    return {
        "delta": DeltaLakeStorage(root=str(root / "delta")),
        "milvus": MilvusResource(uri=str(root / "milvus" / "kb.db")),
        "embedder": EmbedderResource(),
        "kafka": KafkaResource(bootstrap_servers=bootstrap),
        "llm": llm or LLMResource(),
    }


@pytest.fixture
def env(home, monkeypatch):
    root, per_day = home
    monkeypatch.setenv("LLM_ASSETS_HOME", str(root))
    monkeypatch.delenv("AUDIT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("LLM_ASSETS_ENV", raising=False)
    return root, per_day


def _enrich(resources, day, **config):
    return materialize_keys(resources, ["enriched/cases"], partition_key=day,
                        run_config={"ops": {"enriched__cases": {"config": config}}} if config else None)


def _rows(resources, day) -> pl.DataFrame:
    return resources["delta"].read("enriched/cases", partition_column="event_date", partition_values=[day])


def _published(bootstrap: str) -> list[tuple[str, dict]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False,
                         "enable.partition.eof": False})
    try:
        consumer.assign([TopicPartition(settings.ENRICHED_TOPIC, p, OFFSET_BEGINNING) for p in range(3)])
        out, idle = [], 0
        while idle < 6:
            batch = consumer.consume(num_messages=1000, timeout=0.5)
            idle = 0 if batch else idle + 1
            out += [(m.key().decode(), json.loads(m.value())) for m in batch if m.error() is None]
        return out
    finally:
        consumer.close()


def test_local_backend_enriches_every_case_publishes_once_and_signs_an_audit_bundle(env, kafka_broker):
    root, per_day = env
    day = sorted(per_day)[0]
    resources = base_resources(root, kafka_broker)
    before = Counter(k for k, _ in _published(kafka_broker))

    result = _enrich(resources, day)

    assert result.success
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks
    rows = _rows(resources, day)
    curated = resources["delta"].read("curated/cases", partition_column="event_date", partition_values=[day])
    assert sorted(rows["event_id"]) == sorted(curated["event_id"])
    assert set(rows["route"]) <= {"gate", "llm"}
    assert rows.select("model_version", "prompt_version", "kb_index_version").null_count().sum_horizontal().item() == 0
    assert rows["kb_index_version"].n_unique() == 1 and rows["kb_index_version"][0] != "none"
    assert rows["retrieved_doc_ids"].list.len().min() > 0
    # No planted PII in any enriched row.
    planted = {p for m in load_messages(root / "sample_data") for p in m.pii}
    text = " ".join(rows["summary"].to_list() + rows["actions"].to_list())
    assert not [p for p in planted if p in text]

    after = Counter(k for k, _ in _published(kafka_broker))
    new = after - before
    assert set(new) == set(rows["event_id"]) and set(new.values()) == {1}

    bundles = sorted((root / "audit").rglob(f"{day}/*.json"))
    key = audit.resolve_signing_key(os.environ, root).key
    verified = audit.verify_bundle(bundles[-1], key)
    assert verified.ok, verified.reason
    assert sorted(verified.event_ids) == sorted(rows["event_id"])


def test_cache_serves_an_unchanged_partition_and_a_prompt_bump_resends_exactly_that_partition(
        env, kafka_broker, openai_server):
    root, per_day = env
    day_a, day_b = sorted(per_day)
    server = openai_server(slots=8)
    llm = LLMResource(base_url=server.base_url, max_concurrency=8)
    resources = base_resources(root, kafka_broker, llm)

    assert _enrich(resources, day_a, use_gate=False).success
    assert _enrich(resources, day_b, use_gate=False).success
    first = len(server.chat_requests)
    assert first == per_day[day_a] + per_day[day_b]  # one combined call per case

    rerun = _enrich(resources, day_a, use_gate=False)

    assert rerun.success
    assert len(server.chat_requests) == first  # 0 requests for an unchanged partition
    assert set(_rows(resources, day_a)["route"]) == {"cache"}

    bumped = base_resources(root, kafka_broker, LLMResource(base_url=server.base_url, call_mode="per_skill"))
    assert _enrich(bumped, day_a, use_gate=False).success
    assert len(server.chat_requests) - first == 3 * per_day[day_a]  # exactly day A's cases, 3 skills each
    assert set(_rows(resources, day_a)["route"]) == {"llm"}
    assert set(_rows(resources, day_b)["route"]) == {"llm"}  # day B untouched


def test_llm_failures_fall_back_flagged_and_no_case_is_lost(env, kafka_broker, openai_server):
    root, per_day = env
    day = sorted(per_day)[1]
    server = openai_server(slots=8, fault_rates={"http_500": 1.0})
    llm = LLMResource(base_url=server.base_url, max_retries=1, backoff_base_s=0.01, breaker_failure_threshold=5)
    resources = base_resources(root, kafka_broker, llm)

    result = _enrich(resources, day, use_gate=False, use_cache=False)

    assert result.success
    rows = _rows(resources, day)
    assert rows.height == per_day[day]
    assert set(rows["route"]) == {"fallback"}
    assert rows["fallback_reason"].str.contains("http_5xx|circuit_open").all()
    assert rows["label"].is_not_null().all()
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert not checks["fallback_rate_below_threshold"].passed
    assert checks["fallback_rate_below_threshold"].severity == dg.AssetCheckSeverity.WARN
    assert checks["one_row_per_curated_case"].passed
