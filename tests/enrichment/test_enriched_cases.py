"""`enriched/cases` end to end on real Delta, Milvus Lite, the packaged embedding model, the tansu
broker, and the OpenAI-compatible test server (the one stand-in for vLLM)."""

import json
import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from llm_assets.domain import current_pack
from llm_assets import settings
from llm_assets.enrichment import audit, quality
from llm_assets.llm import pipeline
from llm_assets.llm.model_versions import ModelDescription, versions_for
from llm_assets.dev.broker import create_topics
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.kafka import KafkaResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data, load_messages
from llm_assets.asset_keys import CURATED_CASES, EMBEDDING_GATE, ENRICHED_CASES, GATE_AUDITS, GATE_SHUTOFFS
from tests.support.pipeline import artifact_resources, materialize_keys, use_local_home, write_raw_events
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

UNPARTITIONED = ["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index",
                 "models/embedding_gate"]


@pytest.fixture(scope="module")
def home(tmp_path_factory, kafka_broker):
    """Sample data for two days, raw/events, signals, KB index, gate and curated/cases, built once."""
    root = tmp_path_factory.mktemp("enriched")
    with pytest.MonkeyPatch.context() as mp:
        use_local_home(mp, root)
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
        **artifact_resources(root),
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
    return resources["delta"].read(ENRICHED_CASES, partition_column="event_date", partition_values=[day])


def _published(bootstrap: str) -> list[tuple[str, dict]]:
    return [(key, json.loads(value)) for key, value in read_topic(bootstrap, settings.ENRICHED_TOPIC)]


def test_local_backend_enriches_every_case_publishes_once_and_signs_an_audit_bundle(env, kafka_broker):
    root, per_day = env
    day = sorted(per_day)[0]
    resources = base_resources(root, kafka_broker)
    before = Counter(k for k, _ in _published(kafka_broker))

    result = _enrich(resources, day, full_refresh=True)  # decides every case of the day, whatever ran before

    assert result.success
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks
    rows = _rows(resources, day)
    curated = resources["delta"].read(CURATED_CASES, partition_column="event_date", partition_values=[day])
    assert sorted(rows["event_id"]) == sorted(curated["event_id"])
    # No LLM configured: the gate or the local strategy decided every row, and no LLM was called.
    assert set(rows["route"]) <= {"gate", "local"} and rows["llm_calls"].sum() == 0
    named = versions_for(ModelDescription(backend="local", gate_version=rows["gate_version"][0]))
    assert set(rows["model_version"]) == {named.model_version} and named.model_version.startswith("local-rules@v1+gate:")
    assert set(rows["prompt_version"]) == {named.prompt_version}
    metadata = result.asset_materializations_for_node("enriched__cases")[0].metadata
    assert metadata["backend"].value == "local" and metadata["llm_cases"].value == 0
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

    bundle = Path(metadata["audit_bundle"].value)
    assert bundle.parent.name == day
    key = resources["audit_signer"].signing_key.key
    verified = audit.verify_bundle(bundle.read_bytes(), key)
    assert verified.ok, verified.reason
    assert sorted(verified.event_ids) == sorted(rows["event_id"])


def test_a_full_refresh_of_an_unchanged_partition_serves_every_row_from_the_cache_with_its_original_route(
        env, kafka_broker):
    root, per_day = env
    day = sorted(per_day)[0]
    resources = base_resources(root, kafka_broker)
    # Decides anew, refreshes the cache.
    assert _enrich(resources, day, use_cache=False, publish=False, full_refresh=True).success
    decided = _rows(resources, day)
    assert not decided["served_from_cache"].any()

    rerun = _enrich(resources, day, publish=False, full_refresh=True)

    assert rerun.success
    served = _rows(resources, day)
    assert served["served_from_cache"].all()
    original = dict(zip(decided["event_id"], decided["route"]))
    assert dict(zip(served["event_id"], served["route"])) == original  # the route that decided it, never "cache"
    metadata = rerun.asset_materializations_for_node("enriched__cases")[0].metadata
    assert metadata["served_from_cache_share"].value == 1.0
    assert metadata["served_from_cache"].value == len(original)
    checks = {e.asset_check_key.name: e.passed for e in rerun.get_asset_check_evaluations()}
    assert checks["routes_say_what_decided"]


def test_cache_serves_an_unchanged_partition_and_a_prompt_bump_resends_exactly_that_partition(
        env, kafka_broker, openai_server):
    root, per_day = env
    day_a, day_b = sorted(per_day)
    server = openai_server(slots=8)
    llm = LLMResource(base_url=server.base_url, max_concurrency=8)
    resources = base_resources(root, kafka_broker, llm)

    # A model version change (local -> the server's model) is taken in by a full refresh.
    assert _enrich(resources, day_a, use_gate=False, full_refresh=True).success
    assert _enrich(resources, day_b, use_gate=False, full_refresh=True).success
    first = len(server.chat_requests)
    assert first == per_day[day_a] + per_day[day_b]  # one combined call per case

    assert _enrich(resources, day_a, use_gate=False).success  # incremental: nothing new
    assert len(server.chat_requests) == first
    rerun = _enrich(resources, day_a, use_gate=False, full_refresh=True)

    assert rerun.success
    assert len(server.chat_requests) == first  # 0 requests for an unchanged partition
    cached = _rows(resources, day_a)
    assert set(cached["route"]) == {"llm"} and cached["served_from_cache"].all()  # an LLM decided them, once
    assert cached["llm_calls"].sum() == 0

    assert _enrich(resources, day_a, use_gate=False, call_mode="per_skill", full_refresh=True).success
    assert len(server.chat_requests) - first == 3 * per_day[day_a]  # exactly day A's cases, 3 skills each
    bumped = _rows(resources, day_a)
    assert set(bumped["route"]) == {"llm"} and not bumped["served_from_cache"].any()
    assert set(bumped["prompt_version"]) == {f"summarize@v3+classify@v3+propose_actions@v3+{current_pack().version}"}
    assert set(_rows(resources, day_b)["route"]) == {"llm"}  # day B untouched


def test_llm_failures_fall_back_flagged_and_no_case_is_lost(env, kafka_broker, openai_server):
    root, per_day = env
    day = sorted(per_day)[1]
    server = openai_server(slots=8, fault_rates={"http_500": 1.0})
    llm = LLMResource(base_url=server.base_url, max_retries=1, backoff_base_s=0.01, breaker_failure_threshold=5)
    resources = base_resources(root, kafka_broker, llm)

    result = _enrich(resources, day, use_gate=False, use_cache=False, full_refresh=True)

    assert result.success
    rows = _rows(resources, day)
    assert rows.height == per_day[day]
    assert set(rows["route"]) == {"fallback"} and not rows["served_from_cache"].any()
    assert rows["fallback_reason"].str.contains("http_5xx|circuit_open").all()
    assert rows["label"].is_not_null().all()
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert not checks["fallback_rate_below_threshold"].passed
    assert checks["fallback_rate_below_threshold"].severity == dg.AssetCheckSeverity.WARN
    assert checks["one_row_per_curated_case"].passed


def test_routes_say_what_decided_each_row_and_planted_contradictions_fail():
    def row(route, **overrides):
        return {"event_id": f"e-{route}", "route": route, "fallback_reason": "timeout: x" if route == "fallback" else None,
                "llm_calls": 1 if route in ("llm", "fallback") else 0, "served_from_cache": False, **overrides}

    good = pl.DataFrame([row(r) for r in pipeline.ROUTES] + [row("llm", event_id="e-cached", served_from_cache=True,
                                                                     llm_calls=0)])
    passed, details = quality.routes_say_what_decided(good)
    assert passed and details["routes"] == {"fallback": 1, "gate": 1, "llm": 2, "local": 1}
    for bad, problem in [(row("cache"), "unknown_routes"), (row("fallback", fallback_reason=None), "fallbacks_without_reason"),
                         (row("local", llm_calls=2), "llm_calls_on_gate_or_local"),
                         (row("gate", fallback_reason="x"), "reasons_outside_fallback"),
                         (row("fallback", served_from_cache=True), "cached_fallbacks")]:
        passed, details = quality.routes_say_what_decided(pl.DataFrame([bad]))
        assert not passed and details[problem] == 1, (bad, details)


def test_shadow_audits_that_contradict_the_gate_shut_its_labels_off_from_the_next_run_and_rows_say_why(
        env, kafka_broker, openai_server):
    root, per_day = env
    day = max(per_day, key=per_day.get)
    # An LLM that answers one label on every case: every audit of a gated case of another label contradicts it.
    answer = current_pack().labels[0]
    server = openai_server(slots=8, labelers={"test-model": lambda text: answer})
    resources = base_resources(root, kafka_broker, LLMResource(base_url=server.base_url, max_concurrency=8))
    delta: DeltaLakeStorage = resources["delta"]
    audit_everything = {"audit_share": 1.0, "max_audit_share": 1.0, "min_audits_to_judge": 2}
    instance = dg.DagsterInstance.ephemeral()  # remembers which gate serves (its latest materialization)
    assert materialize_keys(resources, ["models/embedding_gate"], instance=instance).success

    def enrich(**config):
        return materialize_keys(resources, ["enriched/cases"], partition_key=day, instance=instance,
                                run_config={"ops": {"enriched__cases": {"config": {**audit_everything, **config}}}})
    try:
        first = enrich(full_refresh=True, publish=False, use_cache=False)

        assert first.success
        rows = _rows(resources, day)
        gated = rows.filter(pl.col("route") == "gate")
        assert gated.height and (gated["audit_source"] == "llm").all()  # every gated case audited
        assert set(gated["audit_label"]) == {answer} and (gated["llm_calls"] >= 1).all()
        assert rows.filter(pl.col("route") != "gate")["audit_source"].is_null().all()
        assert rows["route_reason"].is_not_null().all()
        assert gated["route_reason"].str.starts_with("gate sure: ").all()
        checks = {e.asset_check_key.name: e.passed for e in first.get_asset_check_evaluations()}
        assert checks["routes_say_what_decided"], checks
        metadata = first.asset_materializations_for_node("enriched__cases")[0].metadata
        shut = metadata["gate_labels_shut_off"].value
        judged = sorted(label for label, n in Counter(gated["label"]).items()
                        if n >= 2 and label != answer)  # min_audits_to_judge; all contradicted
        assert judged and shut == judged
        recorded = delta.read(GATE_SHUTOFFS)
        assert set(recorded["label"]) == set(shut) and set(recorded["gate_version"]) == set(gated["gate_version"])
        seen = [o for o in first.get_asset_observation_events() if o.asset_key == EMBEDDING_GATE]
        assert {o.event_specific_data.asset_observation.metadata["shut_off_label"].value for o in seen} == set(shut)

        second = enrich(full_refresh=True, publish=False)

        assert second.success
        again = _rows(resources, day)
        assert not again.filter(pl.col("route") == "gate")["label"].is_in(shut).any()
        rerouted = again.filter(pl.col("route_reason").str.starts_with("gate shut off for "))
        assert rerouted.height and set(rerouted["route"]) == {"llm"}
        named = {reason.removeprefix("gate shut off for ").split(" since ")[0] for reason in rerouted["route_reason"]}
        assert named <= set(shut) and rerouted["route_reason"].str.contains(r"realized precision 0\.000 ").all()
    finally:  # the module's other tests see the gate serving every label again
        for key in (GATE_AUDITS, GATE_SHUTOFFS):
            shutil.rmtree(delta.uri(key), ignore_errors=True)
