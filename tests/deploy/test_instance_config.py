"""deploy/dagster.yaml loads as Dagster reads it, rejects a misspelled key, and the Helm values
render the same instance."""

from __future__ import annotations

import copy

import dagster as dg
import pytest
import yaml
from dagster_k8s import K8sRunLauncher

from llm_assets.execution import ENV_CONFIG_MAP, ENV_SECRET, NAMESPACE_ENV
from tests.deploy.conftest import (
    DEPLOY,
    NAMESPACE,
    k8s_instance_config,
    load_instance,
    production_instance_config,
)

pytestmark = pytest.mark.integration


def _helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def test_the_production_instance_loads_with_a_throwaway_kubeconfig(tmp_path, kube_api, k8s_env):
    home = tmp_path / "home"
    instance = load_instance(home, k8s_instance_config(home, kube_api.write_kubeconfig(tmp_path / "kubeconfig")))

    launcher = instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.job_namespace == NAMESPACE  # from DAGSTER_K8S_NAMESPACE, as the executor's
    assert list(launcher.env_config_maps) == [ENV_CONFIG_MAP] and list(launcher.env_secrets) == [ENV_SECRET]
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure
    assert instance.run_monitoring_enabled
    concurrency = instance.get_concurrency_config()
    assert concurrency.run_queue_config.max_concurrent_runs == 20
    # The one run-tag limit: the Kafka sensor's micro-batch runs one at a time (a tag those runs carry).
    assert concurrency.run_queue_config.tag_concurrency_limits == [
        {"key": "dagster/sensor_name", "value": "kafka_events_sensor", "limit": 1}]
    assert concurrency.pool_config.default_pool_limit == 2
    assert str(concurrency.pool_config.pool_granularity.value) == "op"


@pytest.mark.parametrize("path, misspelled", [
    ((), "concurency"),
    (("run_launcher", "config"), "job_namspace"),
    (("concurrency", "pools"), "default_limt"),
    (("run_retries",), "max_retrys"),
])
def test_a_misspelled_key_fails_validation(tmp_path, kube_api, k8s_env, path, misspelled):
    home = tmp_path / "home"
    config = k8s_instance_config(home, kube_api.write_kubeconfig(tmp_path / "kubeconfig"))
    section = config
    for key in path:
        section = section[key]
    section[misspelled] = copy.deepcopy(next(iter(section.values())))
    with pytest.raises(dg.DagsterInvalidConfigError, match=misspelled):
        # The launcher's own config is checked when it is first built (the daemon does at start).
        load_instance(home, config).run_launcher


def test_the_dead_tag_limit_is_gone_and_pools_carry_the_limits():
    text = (DEPLOY / "dagster.yaml").read_text()
    assert "llm_assets/stage" not in text  # the old limit on an op tag that no run carried
    config = production_instance_config()
    assert set(config["concurrency"]) == {"runs", "pools"}
    assert "config" not in config["run_coordinator"]  # limits in one place only


def test_the_helm_values_render_the_same_instance():
    """The chart writes the instance from the values; they must say what deploy/dagster.yaml says."""
    values, instance = _helm_values(), production_instance_config()
    concurrency, daemon = values["concurrency"], values["dagsterDaemon"]
    assert concurrency["enabled"] is True
    assert concurrency["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    pools = instance["concurrency"]["pools"]
    assert concurrency["pools"] == {"defaultLimit": pools["default_limit"], "granularity": pools["granularity"],
                                    "opGranularityRunBuffer": pools["op_granularity_run_buffer"]}
    assert daemon["runCoordinator"]["config"]["queuedRunCoordinator"] == {}
    retries = instance["run_retries"]
    assert daemon["runRetries"] == {"enabled": retries["enabled"], "maxRetries": retries["max_retries"],
                                    "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"]}
    monitoring = instance["run_monitoring"]
    assert daemon["runMonitoring"] == {"enabled": True, "startTimeoutSeconds": monitoring["start_timeout_seconds"],
                                       "pollIntervalSeconds": monitoring["poll_interval_seconds"]}

    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher = instance["run_launcher"]["config"]
    assert values["runLauncher"]["type"] == instance["run_launcher"]["class"] == "K8sRunLauncher"
    assert [c["name"] for c in k8s["envConfigMaps"]] == launcher["env_config_maps"]
    assert [s["name"] for s in k8s["envSecrets"]] == launcher["env_secrets"]
    assert k8s["runK8sConfig"]["containerConfig"] == launcher["run_k8s_config"]["container_config"]
    assert k8s["runK8sConfig"]["jobSpecConfig"] == {"ttlSecondsAfterFinished": 86400, "backoffLimit": 0}
    assert launcher["run_k8s_config"]["job_spec_config"] == {"ttl_seconds_after_finished": 86400, "backoff_limit": 0}
    assert values["global"]["serviceAccountName"] == launcher["service_account_name"]
    assert launcher["job_namespace"] == {"env": NAMESPACE_ENV}
    assert "postgres" in instance["storage"] and values["postgresql"]["enabled"] is False
