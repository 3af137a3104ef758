"""The dbt project as files: a clean checkout gets its manifest, the tests accept exactly the
contract's values, and the sources map to the lake's asset keys."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from dagster_dbt import DbtProject

from llm_assets.analytics.assets import dbt_build_args
from llm_assets.analytics.project import DBT_PROJECT_DIR, dbt_executable, ensure_manifest, manifest_is_stale
from llm_assets.analytics.translator import AnalyticsTranslator
from llm_assets.llm.pipeline import ROUTES
from llm_assets.domain import current_pack

pytestmark = pytest.mark.integration

LABELS, ACTION_VERBS = current_pack().labels, current_pack().action_verbs

CONTRACT_VALUES = {"label": set(LABELS), "route": set(ROUTES), "action": set(ACTION_VERBS)}


def test_a_clean_checkout_gets_its_manifest_from_dbt_parse_and_a_stale_one_is_parsed_again(tmp_path):
    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    project = DbtProject(project_dir=copy)
    assert not project.manifest_path.exists()

    ensure_manifest(project, dbt_executable())
    manifest = project.manifest_path.read_text()
    assert '"model.llm_assets_analytics.weekly_report"' in manifest
    assert sorted(p.name for p in project.manifest_path.parent.iterdir()) == ["manifest.json"]  # no scratch left
    assert not (copy / "logs").exists()

    built_at = project.manifest_path.stat().st_mtime
    assert not manifest_is_stale(copy, project.manifest_path)
    model = copy / "models" / "weekly_report.sql"
    os.utime(model, (built_at + 10, built_at + 10))  # the model edited after the parse
    assert manifest_is_stale(copy, project.manifest_path)
    ensure_manifest(project, dbt_executable())
    assert project.manifest_path.stat().st_mtime > built_at


def test_a_broken_project_fails_the_load_with_dbts_message(tmp_path):
    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    (copy / "models" / "broken.sql").write_text("select * from {{ ref('no_such_model') }}\n")
    with pytest.raises(RuntimeError, match="no_such_model"):
        ensure_manifest(DbtProject(project_dir=copy), dbt_executable())


def _accepted_values() -> dict[tuple[str, str], set[str]]:
    found = {}
    for path in (DBT_PROJECT_DIR / "models").glob("*.yml"):
        for model in yaml.safe_load(path.read_text()).get("models", []):
            for column in model.get("columns", []):
                for test in column.get("data_tests", []):
                    if isinstance(test, dict) and "accepted_values" in test:
                        values = test["accepted_values"]["arguments"]["values"]
                        found[(model["name"], column["name"])] = values if isinstance(values, str) else set(values)
    return found


def test_dbt_tests_accept_exactly_the_domain_packs_labels_and_verbs_and_the_contract_routes():
    found = _accepted_values()
    assert {column for _, column in found} == set(CONTRACT_VALUES)
    # Labels and verbs are the domain pack's, passed by the build as vars; routes are the contract's.
    by_column = {"label": "{{ var('labels') }}", "action": "{{ var('action_verbs') }}", "route": CONTRACT_VALUES["route"]}
    for (model, column), values in found.items():
        assert values == by_column[column], (model, column)
    variables = json.loads(dbt_build_args("/lake", Path("/state/a.duckdb"))[2])
    assert variables["labels"] == list(LABELS) and variables["action_verbs"] == list(ACTION_VERBS)
    # The label mix of the model-version comparison has a column per label of the pack.
    comparison = (DBT_PROJECT_DIR / "models" / "model_version_comparison.sql").read_text()
    assert "{% for label in var('labels') %}" in comparison


def test_dbt_sources_map_to_the_lake_asset_keys_and_an_unmapped_source_fails_the_load():
    translator = AnalyticsTranslator()
    source = {"resource_type": "source", "source_name": "lake", "name": "enriched_cases"}
    assert translator.get_asset_key(source).to_user_string() == "enriched/cases"
    assert translator.get_asset_key({"resource_type": "model", "name": "weekly_report"}).path == [
        "analytics", "weekly_report"]
    with pytest.raises(ValueError, match="lake.monitoring_drift"):
        translator.get_asset_key({**source, "name": "monitoring_drift"})


def test_the_build_reads_the_delta_resources_root_and_writes_an_absolute_duckdb_path():
    args = dbt_build_args("s3://lake/delta", Path("/state/analytics.duckdb"))
    assert args[:2] == ["build", "--vars"]
    assert yaml.safe_load(args[2]) == {"delta_root": "s3://lake/delta", "duckdb_path": "/state/analytics.duckdb",
                                       "labels": list(LABELS), "action_verbs": list(ACTION_VERBS)}
