"""`enriched/cases` follows `models/production`: a promoted registry version decides the next run's
cases (per row), a never-promoted candidate is never used, a rollback restores the previous
version, a gradual rollout serves its share of the cases (the same ones on every run), and after a
promotion automation re-enriches the days inside the lookback and leaves older ones to a backfill.

Real Delta, Milvus Lite, embedding model, tansu and Dagster instance; the OpenAI-compatible test
server stands in for the registry's server versions. Promotions are written the way
`models/production` writes them (a row of its Delta table and a materialization with its data
version); the lifecycle that decides a promotion is tested in tests/models.
"""

import shutil
import uuid
from datetime import date, timedelta

import dagster as dg
import polars as pl
import pytest
import yaml

from llm_assets import settings
from llm_assets.asset_keys import CURATED_CASES, EMBEDDING_GATE, ENRICHED_CASES, KB_INDEX, MODELS_PRODUCTION, RAW_EVENTS
from llm_assets.dev.broker import create_topics
from llm_assets.enrichment.assets import REENRICHMENT_LOOKBACK_DAYS, enriched_cases
from llm_assets.models import production
from llm_assets.models.registry import load_registry
from llm_assets.partitions import daily_partitions
from llm_assets.resources.llm import LLMResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
from tests.enrichment.test_enriched_cases import UNPARTITIONED, base_resources
from tests.support.openai_test_server import OpenAITestServer, plausible_label, rotated
from tests.support.pipeline import graph_definitions, materialize_keys, use_local_home, write_raw_events

pytestmark = pytest.mark.integration

LOCAL, GOOD, NEVER_PROMOTED = "local-rules@v1", "good-model@v1", "rotated-model@v1"
TODAY = date.fromisoformat(daily_partitions.get_last_partition_key())
INSIDE = (TODAY - timedelta(days=2)).isoformat()   # inside the re-enrichment lookback
OUTSIDE = (TODAY - timedelta(days=REENRICHMENT_LOOKBACK_DAYS + 3)).isoformat()  # older: a backfill's


@pytest.fixture(scope="module")
def llm_server():
    """Serves `test-model` (plausible labels) and `rotated` (every label answered as the next one)."""
    with OpenAITestServer(slots=16, labelers={"rotated": rotated(plausible_label)}) as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory, kafka_broker, llm_server):
    """Nine days of sample events (about 100 a day) ending two days ago; `INSIDE` and `OUTSIDE`
    curated; signals, KB index and gate built; all recorded in one instance, as in a deployment."""
    root = tmp_path_factory.mktemp("production-follow")
    registry = root / "registry.yaml"
    registry.write_text(yaml.safe_dump({"models": [
        {"name": LOCAL, "backend": "local"},
        {"name": GOOD, "backend": "server", "endpoint": f"{llm_server.base_url}/v1", "model": "test-model"},
        {"name": NEVER_PROMOTED, "backend": "server", "endpoint": f"{llm_server.base_url}/v1", "model": "rotated"},
    ]}))
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test() as instance:
        use_local_home(mp, root)
        mp.delenv("LLM_BASE_URL", raising=False)
        generate_sample_data(root / "sample_data", n_events=900, days=9,
                             start_date=date.fromisoformat(OUTSIDE))
        create_topics(kafka_broker, {settings.ENRICHED_TOPIC: 3})
        resources = base_resources(root, kafka_broker)
        write_raw_events(resources["delta"], root / "sample_data")
        assert materialize_keys(resources, UNPARTITIONED, instance=instance).success
        for day in (INSIDE, OUTSIDE):
            assert materialize_keys(resources, ["curated/cases"], partition_key=day, instance=instance).success
        yield root, registry, instance


@pytest.fixture
def env(home, monkeypatch, kafka_broker):
    """The module's home with nothing promoted, and `INSIDE` enriched by the environment's backend
    (no `LLM_BASE_URL`: the local strategy) from scratch."""
    root, registry, instance = home
    monkeypatch.setenv("LLM_ASSETS_HOME", str(root))
    monkeypatch.delenv("AUDIT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("LLM_ASSETS_ENV", raising=False)
    resources = base_resources(root, kafka_broker, llm=LLMResource())
    shutil.rmtree(resources["delta"].uri(MODELS_PRODUCTION), ignore_errors=True)  # nothing promoted
    assert _enrich(resources, registry, instance, INSIDE, full_refresh=True).success
    return resources, registry, instance


def _enrich(resources, registry, instance, day, **config):
    return materialize_keys(resources, ["enriched/cases"], partition_key=day, instance=instance, run_config={
        "ops": {"enriched__cases": {"config": {"registry_path": str(registry), "publish": False, **config}}}})


def _promote(resources, registry, instance, version: str, share: float = 1.0) -> production.ProductionState:
    """A promotion as `models/production` records it: a row of its table, a materialization whose
    data version changes with the version and the share."""
    delta = resources["delta"]
    state = production.next_state(production.current_production(delta), version, share)
    row = production.promotion_row(f"test-{uuid.uuid4().hex}", state, action="promote",
                                   registry_fingerprint=load_registry(registry)[version].fingerprint,
                                   macro_f1=None, accuracy=None, check_run_id=None)
    delta.merge(MODELS_PRODUCTION, row, list(production.PRODUCTION_KEY_COLUMNS))
    instance.report_runless_asset_event(dg.AssetMaterialization(MODELS_PRODUCTION, metadata={
        "version": version, "rollout_share": share}))
    return state


def _rows(resources, day) -> pl.DataFrame:
    return resources["delta"].read(ENRICHED_CASES, partition_column="event_date",
                                   partition_values=[day]).sort("event_id")


def _metadata(result) -> dict:
    (mat,) = result.asset_materializations_for_node("enriched__cases")
    return {k: v.value for k, v in mat.metadata.items()}


def _chat_models(server) -> list[str]:
    return [r["body"].get("model") for r in server.chat_requests]


def test_a_promoted_version_decides_the_next_run_per_row_and_a_rollback_restores_the_previous_one(env, llm_server):
    resources, registry, instance = env
    before = _rows(resources, INSIDE)
    (env_version,) = set(before["model_version"])  # the environment's local strategy
    assert env_version.startswith("local-rules@v1+gate:") and set(before["route"]) <= {"gate", "local"}
    requests_before = len(llm_server.chat_requests)

    # Promoting the version the environment already ran leaves every row as it is.
    _promote(resources, registry, instance, LOCAL)
    same = _enrich(resources, registry, instance, INSIDE)
    assert same.success and _metadata(same)["cases_written"] == 0

    _promote(resources, registry, instance, GOOD)
    promoted = _enrich(resources, registry, instance, INSIDE)

    assert promoted.success
    assert all(e.passed for e in promoted.get_asset_check_evaluations())
    rows = _rows(resources, INSIDE)
    assert rows.height == before.height and set(rows["model_version"]) == {GOOD}
    assert "llm" in set(rows["route"]) and set(rows["route"]) <= {"gate", "llm"}
    meta = _metadata(promoted)
    assert (meta["cases_written"], meta["re_enriched_for_production"], meta["rows_behind_production"]) == (
        before.height, before.height, 0)
    assert meta["production"]["version"] == GOOD and meta["backend"] == "server"
    assert f"| {INSIDE} | {GOOD} | production |" in meta["model_versions"]
    assert set(_chat_models(llm_server)[requests_before:]) == {"test-model"}
    # Nothing is behind any more: the next run writes nothing.
    assert _metadata(_enrich(resources, registry, instance, INSIDE))["cases_written"] == 0

    _promote(resources, registry, instance, LOCAL)  # a rollback: the earlier version promoted again
    requests_at_rollback = len(llm_server.chat_requests)
    rolled_back = _enrich(resources, registry, instance, INSIDE)

    assert rolled_back.success
    rows = _rows(resources, INSIDE)
    assert set(rows["model_version"]) == {env_version}
    # Its results were cached under the same versions: restored without new work.
    assert rows["served_from_cache"].all() and len(llm_server.chat_requests) == requests_at_rollback
    assert rows.select("event_id", "label").equals(before.select("event_id", "label"))
    # The registry's other server version was never promoted: never asked.
    assert "rotated" not in _chat_models(llm_server)


def test_a_25_percent_rollout_serves_a_quarter_of_the_rows_the_same_ones_on_every_run(env, llm_server):
    resources, registry, instance = env
    before = _rows(resources, INSIDE)
    _promote(resources, registry, instance, LOCAL)
    _promote(resources, registry, instance, GOOD, share=0.25)

    first = _enrich(resources, registry, instance, INSIDE)

    assert first.success
    rows = _rows(resources, INSIDE)
    on_new = set(rows.filter(pl.col("model_version") == GOOD)["event_id"])
    assert 0.20 <= len(on_new) / rows.height <= 0.30
    assert on_new == {e for e in rows["event_id"] if production.serves_new_version(e, 0.25)}
    # The rest kept the previous version, untouched: same row, same route, same enriched_at.
    kept = rows.filter(~pl.col("event_id").is_in(list(on_new))).select("event_id", "route", "enriched_at")
    assert kept.equals(before.filter(~pl.col("event_id").is_in(list(on_new))).select(
        "event_id", "route", "enriched_at"))
    meta = _metadata(first)
    assert meta["rollout_share"] == 0.25 and meta["cases_written"] == len(on_new)
    assert f"| {INSIDE} | {GOOD} | production (rolling out) | 0.25 | {len(on_new)} |" in meta["model_versions"]
    assert "previous (rest of the cases) | 0.75 |" in meta["model_versions"]

    again = _enrich(resources, registry, instance, INSIDE)
    assert _metadata(again)["cases_written"] == 0
    assert set(_rows(resources, INSIDE).filter(pl.col("model_version") == GOOD)["event_id"]) == on_new

    # A full recompute splits the cases the same way; each version's results come from its own cache entries.
    requests = len(llm_server.chat_requests)
    refreshed = _enrich(resources, registry, instance, INSIDE, full_refresh=True)
    assert refreshed.success
    rows = _rows(resources, INSIDE)
    assert set(rows.filter(pl.col("model_version") == GOOD)["event_id"]) == on_new
    assert set(rows.filter(pl.col("model_version") != GOOD)["model_version"]) == set(before["model_version"])
    assert rows["served_from_cache"].all() and len(llm_server.chat_requests) == requests


def _automation_defs() -> dg.Definitions:
    assets, checks = graph_definitions()
    assets = [a for a in assets if a.partitions_def == daily_partitions]
    return dg.Definitions(assets=[*assets, *checks, dg.AssetSpec(RAW_EVENTS, partitions_def=daily_partitions),
                                  dg.AssetSpec(MODELS_PRODUCTION), dg.AssetSpec(KB_INDEX),
                                  dg.AssetSpec(EMBEDDING_GATE)],
                          resources={"delta": None, "llm": None, "milvus": None, "embedder": None, "kafka": None,
                                     "artifacts": None, "audit_signer": None})


def test_after_a_promotion_automation_re_enriches_the_days_inside_the_lookback_and_not_older_ones(env):
    resources, registry, instance = env
    assert _enrich(resources, registry, instance, OUTSIDE, full_refresh=True).success
    defs = _automation_defs()
    selection = dg.AssetSelection.assets(ENRICHED_CASES)
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert settled.total_requested == 0  # both days are enriched and nothing changed upstream
    old_rows = _rows(resources, OUTSIDE)

    _promote(resources, registry, instance, GOOD)
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                              cursor=settled.cursor)

    assert after.get_requested_partitions(ENRICHED_CASES) == {INSIDE}
    # What automation launches: a plain run of the partition (no run config but the registry here).
    assert _enrich(resources, registry, instance, INSIDE).success
    assert set(_rows(resources, INSIDE)["model_version"]) == {GOOD}
    assert _rows(resources, OUTSIDE).equals(old_rows)
    handled = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                                cursor=after.cursor)
    assert handled.total_requested == 0

    # An older day catches up through a backfill (a run of that partition).
    assert _enrich(resources, registry, instance, OUTSIDE).success
    assert set(_rows(resources, OUTSIDE)["model_version"]) == {GOOD}


def test_enrichment_automation_does_not_wait_for_a_first_promotion():
    day = (TODAY - timedelta(days=1)).isoformat()
    defs = dg.Definitions(assets=[enriched_cases, dg.AssetSpec(CURATED_CASES, partitions_def=daily_partitions),
                                  dg.AssetSpec(KB_INDEX), dg.AssetSpec(EMBEDDING_GATE), dg.AssetSpec(MODELS_PRODUCTION)],
                          resources={"delta": None, "llm": None, "milvus": None, "embedder": None, "kafka": None,
                                     "artifacts": None, "audit_signer": None})
    with dg.instance_for_test() as instance:
        for key in (KB_INDEX, EMBEDDING_GATE):
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        instance.report_runless_asset_event(dg.AssetMaterialization(CURATED_CASES, partition=day))

        result = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                   asset_selection=dg.AssetSelection.assets(ENRICHED_CASES))

    # models/production was never materialized: the day is enriched all the same (the env-derived backend).
    assert MODELS_PRODUCTION in enriched_cases.asset_deps[ENRICHED_CASES]
    assert result.get_requested_partitions(ENRICHED_CASES) == {day}
