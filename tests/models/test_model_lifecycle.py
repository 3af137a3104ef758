"""The model lifecycle through Dagster on real Delta, Milvus Lite, the packaged embedding model and
the OpenAI-compatible test server: evaluate, gate, promote, refuse, roll out, roll back."""

import dagster as dg
import pytest

from llm_assets.asset_keys import EMBEDDING_GATE, MODELS_EVALUATION, MODELS_PRODUCTION
from llm_assets.gate.model import save_gate, texts_fingerprint, train_gate, training_examples
from llm_assets.lib.redaction import redact_cached
from llm_assets.models import commands, production
from llm_assets.models.assets import REGRESSION_CHECK, latest_check_evaluation, models_evaluation, models_production
from llm_assets.models.checks import no_regression_vs_production
from llm_assets.models.sensors import build_model_registry_sensor
from llm_assets.partitions import model_versions
from llm_assets.domain.packs.payments_ops.sample_data.generator import kb_corpus
from tests.models.conftest import BAD, GOOD, GOOD_TOO

pytestmark = pytest.mark.integration


def evaluate(instance, resources, registry_file, version: str, use_kb: bool = False) -> dg.ExecuteInProcessResult:
    """models/evaluation[version] and its blocking check in one run, as the UI launches them.

    No KB index is published in these tests: only the local version's test opens Milvus (to find none).
    """
    instance.add_dynamic_partitions(model_versions.name, [version])
    config = {"registry_path": str(registry_file), "use_kb": use_kb}
    return dg.materialize(
        [models_evaluation, no_regression_vs_production], partition_key=version, instance=instance,
        resources=resources, raise_on_error=False, run_config={"ops": {"models__evaluation": {"config": config}}})


def check_result(result: dg.ExecuteInProcessResult):
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def promote(instance, resources, registry_file, version: str, share: float = 1.0) -> int:
    return commands.promote(version, share, registry_path=str(registry_file), instance=instance,
                            delta=resources["delta"])


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_the_sensor_adds_a_partition_per_registered_version(instance, registry_file):
    sensor = build_model_registry_sensor(str(registry_file))
    result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    [request] = result.dynamic_partitions_requests
    assert request.partition_keys == ["local-rules@v1", GOOD, BAD, GOOD_TOO]

    instance.add_dynamic_partitions(model_versions.name, list(request.partition_keys))
    again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert not again.dynamic_partitions_requests and again.skip_message


def test_a_rotated_candidate_is_stopped_a_good_one_promoted_and_rollback_restores(
        instance, model_resources, registry_file, model_server):
    delta = model_resources["delta"]

    # The first version ever: judged on the floors alone, then promoted.
    first = evaluate(instance, model_resources, registry_file, GOOD)
    assert first.success and check_result(first).passed
    assert check_result(first).metadata["judged_on"].value.startswith("floors only")
    assert promote(instance, model_resources, registry_file, GOOD) == 0
    assert production.current_production(delta).version == GOOD

    # Rotated labels: the blocking check fails, and the promotion is refused; production is unchanged.
    bad = evaluate(instance, model_resources, registry_file, BAD)
    evaluation = check_result(bad)
    assert not bad.success and not evaluation.passed
    assert evaluation.metadata["production_version"].value == GOOD
    assert evaluation.metadata["macro_f1_diff_high"].value < 0
    assert "| macro-F1 |" in evaluation.metadata["side_by_side"].value
    rows_bad = delta.read(MODELS_EVALUATION, partition_column="model_version", partition_values=[BAD])
    assert rows_bad.height == 200 and not rows_bad["label_correct"].any()  # the write happened; the gate stops promotion
    production_rows = delta.count(MODELS_PRODUCTION)
    assert promote(instance, model_resources, registry_file, BAD) == 1
    assert production.current_production(delta).version == GOOD
    assert delta.count(MODELS_PRODUCTION) == production_rows
    assert instance.get_latest_materialization_event(MODELS_PRODUCTION).run_id != bad.run_id

    # A good candidate passes against production and rolls out to a quarter of the cases.
    good_too = evaluate(instance, model_resources, registry_file, GOOD_TOO)
    assert good_too.success and check_result(good_too).passed
    assert latest_check_evaluation(instance, GOOD_TOO)[0] is True
    assert promote(instance, model_resources, registry_file, GOOD_TOO, share=0.25) == 0
    state = production.current_production(delta)
    assert (state.version, state.previous_version, state.rollout_share) == (GOOD_TOO, GOOD, 0.25)
    assert promote(instance, model_resources, registry_file, GOOD_TOO) == 0  # 25% -> 100%

    # Rollback: the earlier version serves again; the history keeps every promotion.
    assert commands.rollback(registry_path=str(registry_file), instance=instance, delta=delta) == 0
    state = production.current_production(delta)
    assert (state.version, state.rollout_share) == (GOOD, 1.0)
    history = production.history(delta)
    assert history["version"].to_list() == [GOOD, GOOD_TOO, GOOD_TOO, GOOD]
    assert history["action"].to_list() == ["promote", "promote", "promote", "rollback"]
    latest = instance.get_latest_materialization_event(MODELS_PRODUCTION).asset_materialization.metadata
    assert latest["version"].value == GOOD and latest["action"].value == "rollback"


def test_evaluation_reports_the_metrics_and_the_confusion_matrix(instance, model_resources, registry_file):
    result = evaluate(instance, model_resources, registry_file, GOOD)
    assert result.success
    [materialization] = result.asset_materializations_for_node("models__evaluation")
    metadata = materialization.metadata
    assert metadata["accuracy"].value == 1.0 and metadata["macro_f1"].value == 1.0
    assert metadata["valid_json_rate"].value == 1.0 and metadata["llm_calls_per_case"].value == 1.0
    assert metadata["latency_p95_s"].value >= metadata["latency_p50_s"].value >= 0
    assert metadata["tokens_per_case"].value > 0 and metadata["pii_outputs"].value == 0
    assert metadata["confusion_matrix"].value.startswith("![confusion matrix of")
    assert "data:image/png;base64," in metadata["confusion_matrix"].value
    assert "| fraud_suspected |" in metadata["per_label"].value
    rows = model_resources["delta"].read(MODELS_EVALUATION)
    assert rows.height == 200 and rows.unique(["model_version", "event_id"]).height == 200

    again = evaluate(instance, model_resources, registry_file, GOOD)  # re-evaluating replaces, never duplicates
    assert again.success and model_resources["delta"].count(MODELS_EVALUATION) == 200


def test_the_local_version_is_evaluated_like_the_others(instance, model_resources, registry_file, model_server,
                                                        embedder):
    # The local version is the rules plus the gate's classifier: the gate of models/embedding_gate's
    # latest materialization (trained here on the sample KB's resolved cases, as the asset does).
    examples = training_examples(kb_corpus()["resolved_cases"])
    texts = [redact_cached(t) for t in examples.texts]
    gate = train_gate(embedder.encode(texts), examples.labels, texts_sha256=texts_fingerprint(texts),
                      source_description="sample KB resolved cases")
    save_gate(gate, model_resources["artifacts"])
    instance.report_runless_asset_event(dg.AssetMaterialization(EMBEDDING_GATE, metadata={"gate_version": gate.version}))

    result = evaluate(instance, model_resources, registry_file, "local-rules@v1", use_kb=True)

    assert result.success and check_result(result).passed
    rows = model_resources["delta"].read(MODELS_EVALUATION)
    assert set(rows["route"].to_list()) <= {"gate", "local"} and rows["llm_calls"].sum() == 0
    assert set(rows["enriched_model_version"].to_list()) == {f"local-rules@v1+gate:{gate.version}"}
    assert set(rows["kb_index_version"].to_list()) == {"none"}  # Milvus asked: no index published
    assert rows["label_correct"].mean() >= 0.9
    assert not model_server.chat_requests


def test_a_version_whose_entry_changed_after_its_evaluation_is_refused(instance, model_resources, registry_file,
                                                                          model_server):
    assert evaluate(instance, model_resources, registry_file, GOOD).success
    changed = registry_file.read_text().replace("model: good\n", "model: good\n  temperature: 0.3\n", 1)
    assert changed != registry_file.read_text()
    registry_file.write_text(changed)

    again = evaluate(instance, model_resources, registry_file, GOOD)
    assert not again.success
    failure = next(e for e in again.all_events if e.event_type_value == "STEP_FAILURE")
    assert "immutable" in failure.step_failure_data.error.message
    assert promote(instance, model_resources, registry_file, GOOD) == 1
    assert not model_resources["delta"].exists(MODELS_PRODUCTION)


def test_promotion_without_a_passed_check_is_refused(instance, model_resources, registry_file):
    assert promote(instance, model_resources, registry_file, GOOD) == 1
    assert not model_resources["delta"].exists(MODELS_PRODUCTION)
    assert instance.get_latest_materialization_event(MODELS_PRODUCTION) is None
    assert instance.get_latest_asset_check_evaluation_record(REGRESSION_CHECK) is None


def test_the_regression_check_is_blocking_and_models_production_follows_the_evaluation():
    [spec] = no_regression_vs_production.check_specs
    assert spec.blocking and spec.key == REGRESSION_CHECK and spec.partitions_def == model_versions
    [dep] = models_production.specs_by_key[MODELS_PRODUCTION].deps
    assert dep.asset_key == MODELS_EVALUATION
