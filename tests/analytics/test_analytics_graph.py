"""The dbt models in the asset graph: downstream of the Delta tables, grouped and kinded as
analytics, and kept up to date by automation (followers of their upstream, a weekly report)."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from llm_assets.analytics import definitions as analytics
from llm_assets.analytics.assets import analytics_dbt_models
from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS
from llm_assets.partitions import daily_partitions
from llm_assets.resources.delta import DeltaLakeStorage

pytestmark = pytest.mark.unit

WEEKLY_REPORT = dg.AssetKey(["analytics", "weekly_report"])
DAILY_MODELS = set(analytics_dbt_models.keys) - {WEEKLY_REPORT}
ENRICHED_ONLY_MODELS = {k for k in DAILY_MODELS if k.path[-1] != "daily_pipeline_coverage"}


@pytest.fixture(scope="module")
def defs(tmp_path_factory):
    """The domains merged the way `llm_assets/definitions.py` does, with the analytics domain."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_ASSETS_HOME", str(tmp_path_factory.mktemp("graph")))
        from llm_assets.curated import definitions as curated
        from llm_assets.enrichment import definitions as enrichment
        from llm_assets.gate import definitions as gate
        from llm_assets.ingest import definitions as ingest
        from llm_assets.knowledge_base import definitions as knowledge_base
        from llm_assets.resources.environments import resources_for

        merged = dg.Definitions.merge(ingest.defs, curated.defs, knowledge_base.defs, gate.defs, enrichment.defs,
                                      analytics.defs,
                                      dg.Definitions(resources=resources_for("local")))
        dg.Definitions.validate_loadable(merged)
        yield merged


def test_lineage_runs_from_raw_events_through_the_delta_layers_to_the_dbt_models(defs):
    graph = defs.resolve_asset_graph()
    upstream = dg.AssetSelection.assets(WEEKLY_REPORT).upstream().resolve(graph)
    assert {RAW_EVENTS, CURATED_CASES, ENRICHED_CASES} <= upstream
    # The sources are the Delta assets themselves (materializable), not stand-ins with other keys.
    for key in (RAW_EVENTS, CURATED_CASES, ENRICHED_CASES):
        assert graph.get(key).is_materializable
    route_rates = graph.get(dg.AssetKey(["analytics", "daily_route_rates"]))
    assert route_rates.parent_keys == {ENRICHED_CASES}


def test_dbt_models_are_analytics_assets_of_kind_dbt_and_duckdb_with_automation(defs):
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    for key in analytics_dbt_models.keys:
        spec = specs[key]
        assert key.path[0] == "analytics" and spec.group_name == "analytics"
        assert spec.kinds == {"dbt", "duckdb"}
        assert spec.description and len(spec.description) > 40
        assert spec.automation_condition is not None
    checks = {k.asset_key for k in defs.resolve_asset_graph().asset_check_keys}
    assert set(analytics_dbt_models.keys) <= checks  # every model carries its dbt tests as checks


def test_the_dbt_resource_runs_the_venv_dbt_on_the_project_beside_the_package():
    dbt = analytics.defs.resources["dbt"]
    assert dbt.dbt_executable.endswith("/dbt")
    assert dbt.project_dir.endswith("dbt_project")


class Automation:
    """The automation conditions of the analytics models, evaluated tick by tick."""

    def __init__(self):
        # The upstream Delta assets as plain daily specs: their own conditions are not under test.
        upstream = [dg.AssetSpec(k, partitions_def=daily_partitions) for k in (RAW_EVENTS, CURATED_CASES,
                                                                               ENRICHED_CASES)]
        self.defs = dg.Definitions(assets=[*upstream, analytics_dbt_models],  # nothing runs: only conditions
                                   resources={**analytics.defs.resources, "delta": DeltaLakeStorage(root="unused")})
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None
        self.day = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%d")

    def tick(self, at: datetime) -> set[dg.AssetKey]:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor,
                                                   evaluation_time=at)
        self.cursor = result.cursor
        return {k for k in analytics_dbt_models.keys if result.get_num_requested(k)}

    def materialized(self, *keys: dg.AssetKey) -> None:
        for key in keys:
            partition = self.day if key in (RAW_EVENTS, CURATED_CASES, ENRICHED_CASES) else None
            self.instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))


def test_models_build_once_upstream_has_data_then_follow_it_at_most_every_quarter_hour():
    auto = Automation()
    # Ticks in the future of every event reported here: a quarter-hour tick passes between them when meant to.
    start = datetime.now(timezone.utc).replace(minute=1, second=0, microsecond=0) + timedelta(hours=1)

    assert auto.tick(start) == set()  # nothing to read yet
    auto.materialized(RAW_EVENTS, CURATED_CASES)
    assert auto.tick(start + timedelta(minutes=1)) == set()  # enriched/cases has no data yet
    auto.materialized(ENRICHED_CASES)
    assert auto.tick(start + timedelta(minutes=2)) == set(analytics_dbt_models.keys)  # missing: build them all

    auto.materialized(*analytics_dbt_models.keys)
    assert auto.tick(start + timedelta(minutes=3)) == set()
    auto.materialized(ENRICHED_CASES)  # a micro-batch lands
    assert auto.tick(start + timedelta(minutes=4)) == set()  # not before the next quarter hour
    assert auto.tick(start + timedelta(minutes=15)) == DAILY_MODELS  # the weekly report waits for its day

    auto.materialized(*DAILY_MODELS)
    assert auto.tick(start + timedelta(minutes=31)) == set()  # nothing new upstream: nothing to do
    auto.materialized(RAW_EVENTS)  # only daily_pipeline_coverage reads raw/events
    assert auto.tick(start + timedelta(minutes=46)) == DAILY_MODELS - ENRICHED_ONLY_MODELS


def test_the_weekly_report_is_rebuilt_after_monday_six_once_its_inputs_moved():
    auto = Automation()
    now = datetime.now(timezone.utc)
    monday_six = (now + timedelta(days=7 - now.weekday())).replace(hour=6, minute=0, second=0, microsecond=0)
    auto.materialized(RAW_EVENTS, CURATED_CASES, ENRICHED_CASES)
    assert WEEKLY_REPORT in auto.tick(monday_six - timedelta(days=1))  # missing: built at once
    auto.materialized(*analytics_dbt_models.keys)
    assert auto.tick(monday_six - timedelta(hours=12)) == set()

    auto.materialized(ENRICHED_CASES)
    assert WEEKLY_REPORT not in auto.tick(monday_six - timedelta(hours=1))  # the daily models follow; it waits
    auto.materialized(*DAILY_MODELS)
    assert WEEKLY_REPORT not in auto.tick(monday_six + timedelta(minutes=1))  # its inputs predate the tick
    auto.materialized(ENRICHED_CASES)
    # Its inputs are requested in the same tick: one run rebuilds them, then the report.
    assert auto.tick(monday_six + timedelta(minutes=15)) == DAILY_MODELS | {WEEKLY_REPORT}
    auto.materialized(WEEKLY_REPORT)
    assert auto.tick(monday_six + timedelta(hours=2)) == set()  # once a week
