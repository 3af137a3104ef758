"""`enriched/cases` is incremental within a partition: micro-batches into one day enrich, publish and
audit each case once; an empty increment does nothing; `full_refresh` recomputes; a date-range run
sends one LLM batch and judges each date. Real Delta, Milvus Lite, embedding model and tansu; the
OpenAI-compatible test server stands in for vLLM."""

from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from llm_assets import settings
from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS
from llm_assets.dev.broker import create_topics
from llm_assets.enrichment import audit
from llm_assets.ingest import contract
from llm_assets.partitions import daily_partitions
from llm_assets.resources.llm import LLMResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data, load_messages
from tests.enrichment.test_enriched_cases import UNPARTITIONED, _published, base_resources
from tests.support import contract_reference
from tests.support.pipeline import graph_definitions, materialize_keys, use_local_home

pytestmark = pytest.mark.integration

CHECK_NAMES = {"labels_and_confidence_valid", "actions_within_allow_list", "provenance_versions_present",
               "no_pii_in_outputs", "one_row_per_curated_case", "fallback_rate_below_threshold",
               "routes_say_what_decided"}


@pytest.fixture(scope="module")
def home(tmp_path_factory, kafka_broker):
    """Six days of sample events (about 30 a day) as raw rows, not yet written; signals, KB index and gate built."""
    root = tmp_path_factory.mktemp("enriched-incremental")
    with pytest.MonkeyPatch.context() as mp:
        use_local_home(mp, root)
        generate_sample_data(root / "sample_data", n_events=180, days=6, start_date=date(2026, 10, 1))
        create_topics(kafka_broker, {settings.ENRICHED_TOPIC: 3})
        assert materialize_keys(base_resources(root, kafka_broker), UNPARTITIONED).success
        yield root, _raw_frame(root / "sample_data")


@pytest.fixture
def env(home, monkeypatch):
    root, _ = home
    monkeypatch.setenv("LLM_ASSETS_HOME", str(root))
    monkeypatch.delenv("AUDIT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("LLM_ASSETS_ENV", raising=False)
    return home


def _raw_frame(sample_dir: Path) -> pl.DataFrame:
    now = datetime.now(timezone.utc)
    rows = []
    for offset, m in enumerate(load_messages(sample_dir)):
        event = contract_reference.validate_event(m.value)
        if isinstance(event, contract_reference.ValidEvent):
            rows.append(contract_reference.event_row(event, topic="events.raw", partition=0, offset=offset,
                                                     ingested_at=now))
    return contract.events_frame(rows).unique("event_id", keep="last").sort("event_id")


def _days(raw: pl.DataFrame) -> list[str]:
    return sorted(raw["event_date"].unique().to_list())


def _ingest(resources, batch: pl.DataFrame) -> None:
    """A micro-batch lands in raw/events (one MERGE per date, as the ingest run does)."""
    for (day,), part in batch.group_by("event_date"):
        resources["delta"].merge(RAW_EVENTS, part, ["event_id"], partition_column="event_date", partition_value=day)


def _run(resources, days: list[str], *, curate: bool = True, instance=None, **config):
    """One run over `days` (a partition key range when several) that curates then enriches, as the
    sensor's runs will."""
    assets, checks = graph_definitions()
    assets = [a for a in assets if a.partitions_def == daily_partitions]
    assets.append(dg.AssetSpec(RAW_EVENTS, partitions_def=daily_partitions))
    checks = [c for c in checks if c.partitions_def == daily_partitions]
    days = sorted(days)
    tags = ({"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
            if len(days) > 1 else {})
    selection = [CURATED_CASES, ENRICHED_CASES] if curate else [ENRICHED_CASES]
    run_config = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    if config:
        run_config["ops"] = {"enriched__cases": {"config": config}}
    return dg.materialize([*assets, *checks], selection=dg.AssetSelection.assets(*selection),
                          partition_key=days[0] if len(days) == 1 else None, tags=tags, resources=resources,
                          run_config=run_config, instance=instance, raise_on_error=False)


def _metadata(result, partition: str) -> dict:
    (mat,) = [m for m in result.asset_materializations_for_node("enriched__cases") if m.partition == partition]
    return {k: v.value for k, v in mat.metadata.items()}


def _rows(resources, day: str) -> pl.DataFrame:
    return resources["delta"].read(ENRICHED_CASES, partition_column="event_date", partition_values=[day])


def _bundles(resources, day: str) -> list[str]:
    return resources["artifacts"].list(f"audit/enriched_cases/{day}")


def _verified_ids(resources, path: str) -> list[str]:
    verified = audit.verify_bundle(Path(path).read_bytes(), resources["audit_signer"].signing_key.key)
    assert verified.ok, verified.reason
    return sorted(verified.event_ids)


def test_a_second_micro_batch_enriches_publishes_and_audits_only_its_new_cases(env, kafka_broker):
    root, raw = env
    day = _days(raw)[0]
    resources = base_resources(root, kafka_broker)
    of_day = raw.filter(pl.col("event_date") == day)
    first_batch, second_batch = of_day.head(of_day.height // 2), of_day.tail(of_day.height - of_day.height // 2)
    before = Counter(k for k, _ in _published(kafka_broker))

    _ingest(resources, first_batch)
    first = _run(resources, [day])
    assert first.success
    rows_first = _rows(resources, day)
    assert sorted(rows_first["event_id"]) == sorted(first_batch["event_id"])

    _ingest(resources, second_batch)
    second = _run(resources, [day])

    assert second.success
    assert all(e.passed for e in second.get_asset_check_evaluations())
    meta = _metadata(second, day)
    assert (meta["mode"], meta["cases_written"], meta["dagster/row_count"]) == (
        "incremental", second_batch.height, of_day.height)
    # The MERGE inserted the new cases and updated none of the first batch's.
    commit = DeltaTable(resources["delta"].uri(ENRICHED_CASES)).history(1)[0]
    assert commit["operation"] == "MERGE"
    assert (commit["operationMetrics"]["num_target_rows_inserted"],
            commit["operationMetrics"]["num_target_rows_updated"]) == (second_batch.height, 0)
    rows = _rows(resources, day)
    kept = rows.filter(pl.col("event_id").is_in(first_batch["event_id"].to_list())).sort("event_id")
    assert kept.select("event_id", "route", "enriched_at").equals(
        rows_first.sort("event_id").select("event_id", "route", "enriched_at"))
    assert sorted(rows["event_id"]) == sorted(of_day["event_id"])
    # Each event_id published exactly once across both runs.
    published = Counter(k for k, _ in _published(kafka_broker)) - before
    assert set(published) == set(of_day["event_id"]) and set(published.values()) == {1}
    # Two bundles: each verifies and covers only its own run's cases.
    assert len(_bundles(resources, day)) == 2
    assert _verified_ids(resources, _metadata(first, day)["audit_bundle"]) == sorted(first_batch["event_id"])
    assert _verified_ids(resources, meta["audit_bundle"]) == sorted(second_batch["event_id"])


def test_a_rerun_with_nothing_new_calls_no_llm_publishes_nothing_and_writes_no_bundle(
        env, kafka_broker, openai_server):
    root, raw = env
    day = _days(raw)[1]
    server = openai_server(slots=8)
    resources = base_resources(root, kafka_broker, LLMResource(base_url=server.base_url, max_concurrency=8))
    _ingest(resources, raw.filter(pl.col("event_date") == day))
    assert _run(resources, [day], use_gate=False).success
    requests, bundles, version = len(server.chat_requests), _bundles(resources, day), \
        resources["delta"].version(ENRICHED_CASES)
    assert requests > 0 and len(bundles) == 1
    before = Counter(k for k, _ in _published(kafka_broker))

    rerun = _run(resources, [day], use_gate=False)

    assert rerun.success
    assert all(e.passed for e in rerun.get_asset_check_evaluations())
    assert len(server.chat_requests) == requests
    assert Counter(k for k, _ in _published(kafka_broker)) == before
    assert _bundles(resources, day) == bundles
    assert resources["delta"].version(ENRICHED_CASES) == version  # no commit at all
    meta = _metadata(rerun, day)
    assert meta["summary"] == "0 new cases" and meta["cases_written"] == 0 and meta["llm_batches"] == 0
    assert meta["published_to_cases_enriched"] == 0 and "audit_bundle" not in meta


def test_a_full_refresh_recomputes_every_row_keeps_cached_routes_and_republishes(env, kafka_broker, openai_server):
    root, raw = env
    day = _days(raw)[2]
    server = openai_server(slots=8)
    resources = base_resources(root, kafka_broker, LLMResource(base_url=server.base_url, max_concurrency=8))
    _ingest(resources, raw.filter(pl.col("event_date") == day))
    assert _run(resources, [day], use_gate=False).success
    decided = _rows(resources, day).sort("event_id")
    assert set(decided["route"]) == {"llm"} and not decided["served_from_cache"].any()
    requests = len(server.chat_requests)
    before = Counter(k for k, _ in _published(kafka_broker))

    refreshed = _run(resources, [day], curate=False, use_gate=False, full_refresh=True)

    assert refreshed.success
    rows = _rows(resources, day).sort("event_id")
    assert rows["event_id"].to_list() == decided["event_id"].to_list()
    assert len(server.chat_requests) == requests  # every case came from the cache
    assert rows["route"].to_list() == decided["route"].to_list() and rows["served_from_cache"].all()
    assert (rows["enriched_at"] > decided["enriched_at"]).all()  # every row recomputed
    # A full refresh (a backfill or version change) publishes and audits every case of the date again.
    published = Counter(k for k, _ in _published(kafka_broker)) - before
    assert set(published) == set(decided["event_id"]) and set(published.values()) == {1}
    meta = _metadata(refreshed, day)
    assert meta["mode"] == "full_refresh" and meta["cases_written"] == decided.height
    assert _verified_ids(resources, meta["audit_bundle"]) == decided["event_id"].to_list()


def test_a_date_range_run_sends_one_llm_batch_and_judges_each_date(env, kafka_broker, openai_server):
    root, raw = env
    days = _days(raw)[3:6]
    server = openai_server(slots=8)
    resources = base_resources(root, kafka_broker, LLMResource(base_url=server.base_url, max_concurrency=8))
    of_days = raw.filter(pl.col("event_date").is_in(days))
    _ingest(resources, of_days)

    with dg.instance_for_test() as instance:
        result = _run(resources, days, use_gate=False, instance=instance)

        assert result.success
        meta = _metadata(result, days[0])
        assert meta["llm_batches"] == 1 and meta["llm_cases"] == of_days.height  # one batch for the 3 dates
        assert len(server.chat_requests) == of_days.height  # one combined call per case
        evaluations = {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()
                       if e.asset_key == ENRICHED_CASES}
        assert set(evaluations) == {(name, day) for name in CHECK_NAMES for day in days}
        assert all(e.passed for e in evaluations.values())
        written = meta["enriched_cases_versions_written"]
        assert sorted(written) == days and len(set(written.values())) == 1  # one MERGE (commit) for the range
        for day in days:
            expected = of_days.filter(pl.col("event_date") == day)["event_id"]
            at_version = resources["delta"].read(ENRICHED_CASES, partition_column="event_date", partition_values=[day],
                                                 version=written[day])
            assert sorted(at_version["event_id"]) == sorted(expected)
            assert evaluations[("one_row_per_curated_case", day)].metadata["enriched_cases_version"].value == \
                written[day]
            assert _verified_ids(resources, meta["audit_bundles"][day]) == sorted(expected)
