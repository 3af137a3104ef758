"""The dbt models built by dagster-dbt inside a Dagster run, on real Delta tables: the rows they
hold, and dbt's tests reported as asset checks that pass on good data and fail on bad data."""

import dagster as dg
import pytest

from llm_assets.analytics.assets import analytics_dbt_models
from llm_assets.analytics.project import DBT_PROJECT_DIR
from llm_assets.resources.delta import DeltaLakeStorage
from tests.analytics.lake import Case, build_models, query, write_lake

pytestmark = pytest.mark.integration

MONDAY, NEXT_MONDAY = "2026-03-02", "2026-03-09"
GOOD_CASES = [
    # Week 1: four cases curated, three enriched (one gate from the cache, one llm, one fallback).
    Case("e1", MONDAY, label="fraud_suspected", route="gate", served_from_cache=True, confidence=0.9,
         actions=[("notify", "analyst"), ("escalate", "supervisor")]),
    Case("e2", MONDAY, label="fraud_suspected", route="llm", confidence=0.7, actions=[("escalate", "supervisor")]),
    Case("e3", MONDAY, label="data_quality", route="fallback", confidence=0.5, actions=[("correct", "analyst")]),
    Case("e4", MONDAY, enriched=False),
    # Week 2: another model version, all enriched.
    Case("e5", NEXT_MONDAY, label="routing_error", route="local", model_version="model-b",
         actions=[("correct", "analyst"), ("notify", "analyst")]),
    Case("e6", NEXT_MONDAY, label="routing_error", route="local", model_version="model-b", confidence=0.6),
    Case("e7", NEXT_MONDAY, label="other", route="llm", model_version="model-b", served_from_cache=True,
         confidence=1.0, actions=[("notify", "analyst")]),
]


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}


def all_check_names() -> set[str]:
    return {key.name for key in analytics_dbt_models.check_keys}


@pytest.fixture(scope="module")
def good_build(tmp_path_factory):
    """One build on GOOD_CASES shared by the assertions below (a dbt build takes seconds)."""
    home = tmp_path_factory.mktemp("analytics")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_ASSETS_HOME", str(home))
        delta = DeltaLakeStorage(root=str(home / "delta"))
        write_lake(delta, GOOD_CASES)
        result = build_models(delta)
        yield result, home


def test_the_build_materializes_every_model_and_every_dbt_test_passes_as_a_check(good_build):
    result, _ = good_build
    assert result.success
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert materialized == set(analytics_dbt_models.keys)
    checks = check_results(result)
    assert set(checks) == all_check_names()  # every dbt test ran, as an asset check
    assert "every_enriched_case_has_a_curated_case" in checks  # the singular test too
    assert all(checks.values()), {name for name, passed in checks.items() if not passed}


def test_the_duckdb_file_lives_under_llm_assets_home_not_in_the_repository(good_build):
    _, home = good_build
    assert (home / "analytics.duckdb").is_file()
    assert not list(DBT_PROJECT_DIR.rglob("*.duckdb"))


def test_materializations_report_the_rows_each_model_holds(good_build):
    result, _ = good_build
    rows = {e.asset_key.path[-1]: e.materialization.metadata["dagster/row_count"].value
            for e in result.get_asset_materialization_events()}
    assert rows["daily_route_rates"] == 5 and rows["weekly_report"] == 2 and rows["model_version_comparison"] == 2


def test_route_rates_count_each_route_and_the_cases_the_cache_served(good_build):
    _, home = good_build
    rows = query(home, "select strftime(event_date, '%Y-%m-%d'), route, cases, share_of_day, served_from_cache "
                 "from daily_route_rates order by all")
    assert rows == [
        (MONDAY, "fallback", 1, pytest.approx(1 / 3), 0),
        (MONDAY, "gate", 1, pytest.approx(1 / 3), 1),
        (MONDAY, "llm", 1, pytest.approx(1 / 3), 0),
        (NEXT_MONDAY, "llm", 1, pytest.approx(1 / 3), 1),
        (NEXT_MONDAY, "local", 2, pytest.approx(2 / 3), 0),
    ]
    fallback = query(home, "select strftime(event_date, '%Y-%m-%d'), cases, fallback_cases, fallback_rate, "
                     "top_fallback_reason, cache_rate from daily_fallback_rates order by 1")
    assert fallback == [(MONDAY, 3, 1, pytest.approx(1 / 3), "llm_timeout", pytest.approx(1 / 3)),
                        (NEXT_MONDAY, 3, 0, 0.0, None, pytest.approx(1 / 3))]


def test_label_and_action_counts_come_from_the_label_and_the_actions_json(good_build):
    _, home = good_build
    labels = query(home, "select strftime(event_date, '%Y-%m-%d'), label, cases from daily_label_counts order by all")
    assert labels == [(MONDAY, "data_quality", 1), (MONDAY, "fraud_suspected", 2),
                      (NEXT_MONDAY, "other", 1), (NEXT_MONDAY, "routing_error", 2)]
    actions = query(home, "select strftime(event_date, '%Y-%m-%d'), action, proposals, cases, above_analyst_approval "
                    "from daily_action_counts order by all")
    assert actions == [(MONDAY, "correct", 1, 1, 0), (MONDAY, "escalate", 2, 2, 2), (MONDAY, "notify", 1, 1, 0),
                       (NEXT_MONDAY, "correct", 1, 1, 0), (NEXT_MONDAY, "notify", 2, 2, 0)]


def test_model_versions_are_compared_on_cases_confidence_label_mix_and_fallbacks(good_build):
    _, home = good_build
    rows = query(home, "select model_version, prompt_version, cases, avg_confidence, fraud_suspected_share, "
                 "routing_error_share, fallback_rate, cache_rate from model_version_comparison order by 1")
    assert rows == [
        ("model-a", "prompt-1", 3, pytest.approx(0.7), pytest.approx(2 / 3), 0.0, pytest.approx(1 / 3),
         pytest.approx(1 / 3)),
        ("model-b", "prompt-1", 3, pytest.approx(0.8), 0.0, pytest.approx(2 / 3), 0.0, pytest.approx(1 / 3)),
    ]


def test_the_weekly_report_follows_cases_through_the_layers(good_build):
    _, home = good_build
    rows = query(home, "select strftime(week_start, '%Y-%m-%d'), raw_events, curated_cases, enriched_cases, "
                 "enrichment_coverage, fallback_rate, gate_rate, top_label, escalations_proposed "
                 "from weekly_report order by 1")
    assert rows == [
        (MONDAY, 4, 4, 3, pytest.approx(0.75), pytest.approx(1 / 3), pytest.approx(1 / 3), "fraud_suspected", 2),
        (NEXT_MONDAY, 3, 3, 3, 1.0, 0.0, 0.0, "routing_error", 0),
    ]
    coverage = query(home, "select strftime(event_date, '%Y-%m-%d'), cases_not_enriched from daily_pipeline_coverage "
                     "order by 1")
    assert coverage == [(MONDAY, 1), (NEXT_MONDAY, 0)]


def test_bad_data_fails_the_dbt_tests_that_guard_it_as_failed_checks(delta):
    # An unknown route (not gate/llm/local/fallback) and an enriched case that was never curated.
    write_lake(delta, [
        Case("e1", MONDAY, route="llm"),
        Case("e2", MONDAY, route="cached"),
        Case("e3", MONDAY, route="gate", curated=False),
    ])
    result = build_models(delta)

    assert not result.success  # a failed dbt test (severity error) fails the step
    checks = check_results(result)
    failed = {name for name, passed in checks.items() if not passed}
    assert failed == {
        "accepted_values_daily_route_rates_route__gate__llm__local__fallback",
        "accepted_values_enriched_cases_by_day_route__gate__llm__local__fallback",
        "every_enriched_case_has_a_curated_case",
    }
    assert checks["not_null_daily_route_rates_route"]  # the other tests of the same model ran and passed
    # dbt skips what depends on a failed test: the weekly report is not rebuilt from bad inputs.
    materialized = {m.asset_key.path[-1] for m in result.get_asset_materialization_events()}
    assert "weekly_report" not in materialized and "daily_route_rates" in materialized
