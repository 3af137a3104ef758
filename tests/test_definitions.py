"""The code location as a user sees it in the UI: contract asset keys, checks, jobs, sensors,
descriptions, kinds, policies. A change to the graph shows up here as a visible diff."""

import importlib

import dagster as dg
import pytest

from llm_assets.partitions import daily_partitions, model_versions

pytestmark = pytest.mark.integration

EXPECTED_ASSETS = {
    "raw/events": "daily", "raw/rejected_events": None,
    "features/entity_signals": None, "signals/exceptions": None, "curated/cases": "daily",
    "kb/documents": None, "kb/index": None, "models/embedding_gate": None, "enriched/cases": "daily",
    "models/gate_training_examples": None,
    "models/evaluation": model_versions, "models/production": None,
    "evaluation/samples": "daily", "evaluation/ratings": None, "evaluation/quality_metrics": "daily",
    "evaluation/golden_cases": None,
    "monitoring/drift_report": "daily", "monitoring/case_tickets": "daily", "monitoring/gate_precision": "daily",
}
# The code location `llm_assets_analytics` (`llm_assets/analytics_definitions.py`).
EXPECTED_ANALYTICS_ASSETS = {f"analytics/{model}" for model in (
    "daily_label_counts", "daily_route_rates", "daily_fallback_rates", "daily_action_counts",
    "model_version_comparison", "daily_pipeline_coverage", "weekly_report", "enriched_cases_by_day")}
EXPECTED_CHECKS = {
    "curated/cases": {"curated_cases_contract", "curated_cases_unique_event_id", "curated_cases_match_raw_events"},
    "enriched/cases": {"labels_and_confidence_valid", "actions_within_allow_list", "provenance_versions_present",
                       "no_pii_in_outputs", "one_row_per_curated_case", "fallback_rate_below_threshold"},
    "kb/index": {"vector_count_matches_chunks", "retrieval_recall_at_5"},
    "models/gate_training_examples": {"no_clear_pii_in_examples", "provenance_on_every_example"},
    "models/evaluation": {"no_regression_vs_production"},
    "evaluation/samples": {"no_pii_in_samples", "samples_meet_label_minimum"},
    "monitoring/drift_report": {"no_drift_detected"},
    "monitoring/case_tickets": {"case_tickets_opened"},
    "monitoring/gate_precision": {"gate_precision_meets_target"},
}


def _location_defs(tmp_path_factory, module: str):
    """The `defs` of a code location's module, loaded over a fresh home and validated as Dagster loads it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_ASSETS_HOME", str(tmp_path_factory.mktemp("home")))
        loaded = importlib.import_module(module).defs
        dg.Definitions.validate_loadable(loaded)
        yield loaded


@pytest.fixture(scope="module")
def defs(tmp_path_factory):
    yield from _location_defs(tmp_path_factory, "llm_assets.definitions")


def test_the_graph_has_the_contract_asset_keys_and_partitions(defs):
    graph = defs.resolve_asset_graph()
    found = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable:
            found[key.to_user_string()] = "daily" if node.partitions_def == daily_partitions else node.partitions_def
    assert found == EXPECTED_ASSETS


def test_every_asset_has_a_description_kinds_a_group_and_an_owner(defs):
    for spec in defs.resolve_all_asset_specs():
        assert spec.description and len(spec.description) > 40, spec.key
        assert spec.kinds, spec.key
        assert spec.group_name and spec.group_name != "default", spec.key
        assert spec.owners and all(o.startswith("team:") for o in spec.owners), spec.key


def test_daily_assets_carry_the_freshness_policy(defs):
    for spec in defs.resolve_all_asset_specs():
        if spec.partitions_def == daily_partitions:
            assert spec.freshness_policy is not None, spec.key


def test_blocking_quality_gates_exist_on_the_tables_users_rely_on(defs):
    checks: dict[str, set[str]] = {}
    for key in defs.resolve_asset_graph().asset_check_keys:
        checks.setdefault(key.asset_key.to_user_string(), set()).add(key.name)
    for asset, names in EXPECTED_CHECKS.items():
        assert names <= checks.get(asset, set()), (asset, checks.get(asset))
    assert {"raw_events_contract", "raw_events_unique_event_id"} <= checks["raw/events"]


def test_jobs_sensors_and_resources_are_bound(defs):
    assert {s.name for s in defs.sensors} >= {"kafka_events_sensor", "llm_assets_automation", "vllm_metrics_sensor",
                                              "gate_retraining_sensor", "model_registry_sensor"}
    assert {"ingest_events_job", "ingest_rejected_events_job"} <= {j.name for j in defs.jobs}
    assert set(defs.resources) == {"delta", "kafka", "kafka_ingest", "milvus", "embedder", "llm", "artifacts",
                                  "audit_signer", "case_tool"}


def test_production_environment_reads_endpoints_from_env_vars(monkeypatch):
    from llm_assets.resources.environments import resources_for

    prod = resources_for("prod")
    endpoints = {"delta": "root", "kafka": "bootstrap_servers", "milvus": "uri", "llm": "base_url"}
    for resource, field in endpoints.items():
        assert isinstance(getattr(prod[resource], field), dg.EnvVar), (resource, field)
    assert isinstance(prod["llm"].api_key, dg.EnvVar)
    with pytest.raises(ValueError, match="LLM_ASSETS_ENV"):
        resources_for("staging")


def test_the_module_exposes_exactly_one_definitions_object_for_dagster_dev():
    from dagster._core.workspace.autodiscovery import loadable_targets_from_python_module

    targets = loadable_targets_from_python_module("llm_assets.definitions", None)
    assert [t.attribute for t in targets] == ["defs"]


@pytest.fixture(scope="module")
def analytics_defs(tmp_path_factory):
    yield from _location_defs(tmp_path_factory, "llm_assets.analytics_definitions")


def test_the_analytics_location_holds_the_dbt_models_downstream_of_the_main_locations_tables(analytics_defs):
    graph = analytics_defs.resolve_asset_graph()
    materializable = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    assert materializable == EXPECTED_ANALYTICS_ASSETS
    # What they read is defined by the main location: referenced here by key only (the lineage joins them).
    upstream = {k.to_user_string() for k in graph.get_all_asset_keys() if not graph.get(k).is_materializable}
    assert {"enriched/cases", "curated/cases"} <= upstream <= set(EXPECTED_ASSETS)
    for spec in analytics_defs.resolve_all_asset_specs():
        if spec.key.to_user_string() in EXPECTED_ANALYTICS_ASSETS:
            assert spec.owners == ["team:analytics"] and spec.group_name == "analytics", spec.key
    assert {s.name for s in analytics_defs.sensors} == {"analytics_automation"}
    assert set(analytics_defs.resources) == {"delta", "dbt"}


def test_the_main_location_never_imports_dbt():
    """Each of its runs (a Kafka micro-batch included) is a new process that loads the module."""
    import subprocess
    import sys

    probe = "import sys, llm_assets.definitions; print(sorted(m for m in ('dbt', 'dagster_dbt') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_workspace_loads_both_locations():
    import yaml

    from llm_assets.dev.dev_command import REPO_ROOT

    entries = [e["python_module"] for e in yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]]
    assert {(e["module_name"], e["location_name"]) for e in entries} == {
        ("llm_assets.definitions", "llm_assets"), ("llm_assets.analytics_definitions", "llm_assets_analytics")}
