"""Through Dagster's GraphQL API (the UI's), the `no_regression_vs_production` evaluation of a
rotated candidate is visible with its side-by-side table and interval."""

from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from tests.models.conftest import BAD, GOOD
from tests.models.test_model_lifecycle import evaluate

pytestmark = pytest.mark.integration

CHECK_EXECUTIONS = """
query CheckExecutions($assetKey: AssetKeyInput!, $checkName: String!, $partition: String) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, partition: $partition, limit: 5) {
    runId status partition
    evaluation {
      success severity partition
      metadataEntries {
        label
        ... on MarkdownMetadataEntry { mdStr }
        ... on FloatMetadataEntry { floatValue }
        ... on TextMetadataEntry { text }
      }
    }
  }
}
"""


def test_the_check_evaluation_and_its_side_by_side_table_are_in_graphql(tmp_path, monkeypatch, model_resources,
                                                                       registry_file):
    monkeypatch.setenv("MODELS_TEST_HOME", str(tmp_path))  # model_resources live under tmp_path too
    location = str(Path(__file__).with_name("graphql_location.py"))
    with dg.instance_for_test() as instance:
        assert evaluate(instance, model_resources, registry_file, GOOD).success
        from llm_assets.models import commands

        assert commands.promote(GOOD, registry_path=str(registry_file), instance=instance,
                                delta=model_resources["delta"]) == 0
        bad = evaluate(instance, model_resources, registry_file, BAD)
        assert not bad.success

        with define_out_of_process_context(location, "defs", instance) as context:
            result = execute_dagster_graphql(context, CHECK_EXECUTIONS, variables={
                "assetKey": {"path": ["models", "evaluation"]}, "checkName": "no_regression_vs_production",
                "partition": BAD})

    assert not result.errors, result.errors
    [execution] = result.data["assetCheckExecutions"]
    assert (execution["runId"], execution["status"], execution["partition"]) == (bad.run_id, "FAILED", BAD)
    evaluation = execution["evaluation"]
    assert evaluation["success"] is False and evaluation["severity"] == "ERROR"
    entries = {e["label"]: e for e in evaluation["metadataEntries"]}
    table = entries["side_by_side"]["mdStr"]
    assert f"| version | {BAD} | {GOOD} |" in table
    assert "| macro-F1 | 0.0000 | 1.0000 | -1.0000 \\[-1.0000, -1.0000\\] |" in table  # markdown-escaped brackets
    assert "95% interval" in table.splitlines()[0]
    assert entries["macro_f1_diff_high"]["floatValue"] < 0
    assert entries["production_version"]["text"] == GOOD
