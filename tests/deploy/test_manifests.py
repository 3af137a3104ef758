"""The Helm values against the chart's keys, the vLLM and ConfigMap manifests, and the image's pins.

`helm` is not installable from the package registries here and the chart cannot be fetched in
CI, so the values are checked against the keys of the `dagster/dagster` chart 1.13 (its values
schema, read from the chart's source): a misspelled key would be silently ignored by Helm.
"""

from __future__ import annotations

import importlib.util
import re

import dagster as dg
import pytest
import yaml

from llm_assets.execution import (
    ENV_CONFIG_MAP,
    ENV_SECRET,
    GPU_IMAGE_ENV,
    GPU_RESOURCE,
    NAMESPACE_ENV,
    OFFLINE_VLLM_RESOURCES,
    SHM_SIZE,
)
from llm_assets.resources.environments import production_resources
from tests.deploy.conftest import DEPLOY, REPO

pytestmark = pytest.mark.unit

# Keys the chart accepts, per section this project sets (chart 1.13 values schema).
CHART_KEYS: dict[str, set[str]] = {
    "": {"dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
         "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
         "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate",
         "telemetry", "serviceAccount", "global", "retention", "concurrency", "additionalInstanceConfig",
         "nameOverride", "fullnameOverride", "rbacEnabled"},
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
               "dagsterInstanceConfigMap"},
    "serviceAccount": {"create", "name", "annotations"},
    "postgresql": {"postgresqlScheme", "image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams", "service"},
    "dagsterWebserver": {"dbStatementTimeout", "dbPoolRecycle", "logLevel", "schedulerName", "volumeMounts",
                         "volumes", "pathPrefix", "replicaCount", "image", "nameOverride", "service", "workspace",
                         "env", "envConfigMaps", "envSecrets", "deploymentLabels", "labels", "nodeSelector",
                         "affinity", "tolerations", "podSecurityContext", "securityContext", "resources",
                         "readinessProbe", "livenessProbe", "startupProbe", "annotations", "enableReadOnly"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[]": {
        "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
        "deploymentNamespace", "port", "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector",
        "affinity", "tolerations", "podSecurityContext", "securityContext", "resources", "livenessProbe",
        "readinessProbe", "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName", "initContainers",
        "sidecarContainers", "deploymentStrategy"},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
        "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
        "schedulerName", "securityContext", "runK8sConfig"},
    "runLauncher.config.k8sRunLauncher.runK8sConfig": {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata",
                                                       "jobSpecConfig", "jobMetadata"},
    "dagsterDaemon": {"enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
                      "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
                      "podSecurityContext", "securityContext", "resources", "checkDbReadyInitContainer",
                      "livenessProbe", "readinessProbe", "startupProbe", "annotations", "runMonitoring", "runRetries",
                      "sensors", "schedules", "backfills", "schedulerName", "logFormat", "volumeMounts", "volumes",
                      "initContainerResources", "extraContainers", "extraPrependedInitContainers"},
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
        "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"},
    "dagsterDaemon.runRetries": {"enabled", "maxRetries", "retryOnAssetOrOpFailure"},
    # A free-form map in the schema; these are the keys the chart's instance template reads.
    "dagsterDaemon.runMonitoring": {"enabled", "startTimeoutSeconds", "maxResumeRunAttempts", "pollIntervalSeconds",
                                    "freeSlotsAfterRunEndSeconds"},
    "dagsterDaemon.sensors": {"useThreads", "numWorkers", "numSubmitWorkers"},
    "dagsterDaemon.schedules": {"useThreads", "numWorkers", "numSubmitWorkers"},
    "dagsterDaemon.backfills": {"useThreads", "numWorkers", "numSubmitWorkers"},
    "concurrency": {"enabled", "pools", "runs"},
    "concurrency.pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    "concurrency.runs": {"maxConcurrentRuns", "tagConcurrencyLimits"},
    "ingress": {"enabled", "annotations", "labels", "ingressClassName", "dagsterWebserver", "readOnlyDagsterWebserver",
                "flower"},
    "telemetry": {"enabled"},
}


def _load(path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _sections(values: dict, prefix: str = ""):
    """(section path, mapping) for every mapping the chart schema above names."""
    if prefix in CHART_KEYS:
        yield prefix, values
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            yield from _sections(value, path)
        elif isinstance(value, list) and f"{path}[]" in CHART_KEYS:
            for item in value:
                yield f"{path}[]", item


def test_the_helm_values_use_only_keys_of_the_dagster_chart():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    checked = dict(_sections(values))
    assert {"", "dagsterDaemon", "runLauncher.config.k8sRunLauncher", "concurrency.pools",
            "dagster-user-deployments.deployments[]"} <= set(checked)
    unknown = {path or "(top level)": sorted(set(section) - CHART_KEYS[path]) for path, section in checked.items()
               if set(section) - CHART_KEYS[path]}
    assert not unknown, f"keys the chart does not have (Helm would ignore them): {unknown}"


def test_the_code_locations_run_the_definitions_in_prod_with_the_shared_environment():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    deployments = {d["name"]: d for d in values["dagster-user-deployments"]["deployments"]}
    modules = {"llm-assets": "llm_assets.definitions", "llm-assets-analytics": "llm_assets.analytics_definitions"}
    assert set(deployments) == set(modules)  # the two locations of workspace.yaml
    for name, deployment in deployments.items():
        assert deployment["dagsterApiGrpcArgs"] == ["--module-name", modules[name]]
        assert {"name": "LLM_ASSETS_ENV", "value": "prod"} in deployment["env"]
        assert deployment["envConfigMaps"] == [{"name": ENV_CONFIG_MAP}]
        assert deployment["envSecrets"] == [{"name": ENV_SECRET}]
        assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}


def _config_map() -> dict:
    [config_map] = _load(DEPLOY / "k8s" / "config.yaml")
    assert config_map["kind"] == "ConfigMap" and config_map["metadata"]["name"] == ENV_CONFIG_MAP
    return config_map["data"]


# Created out of band (docs/operations.md), never in the repository.
SECRET_KEYS = {"LLM_API_KEY", "AUDIT_SIGNING_KEY", "DAGSTER_PG_PASSWORD", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"}


def test_every_production_setting_is_in_the_config_map_or_the_secret(monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_ENV", "prod")
    data = _config_map()
    env_vars = set()
    for resource in production_resources().values():
        for value in resource.__dict__.values():
            if isinstance(value, dict) and set(value) == {"env"}:
                env_vars.add(value["env"])
            elif isinstance(value, dg.EnvVar):
                env_vars.add(value.env_var_name)
    assert {"DELTA_ROOT", "KAFKA_BOOTSTRAP_SERVERS", "MILVUS_URI", "LLM_BASE_URL", "LLM_MODEL"} <= env_vars
    assert env_vars <= set(data) | SECRET_KEYS, env_vars - set(data) - SECRET_KEYS
    assert data["AWS_S3_LOCKING_PROVIDER"] == "dynamodb" and data["DELTA_DYNAMO_TABLE_NAME"]
    assert data["DELTA_ROOT"].startswith("s3://") and data["ARTIFACT_ROOT"].startswith("s3://")
    assert {NAMESPACE_ENV, GPU_IMAGE_ENV, "LLM_ASSETS_ENV"} <= set(data)
    # deploy/dagster.yaml reads these (the password is the Secret's).
    instance = (DEPLOY / "dagster.yaml").read_text()
    for name in re.findall(r"env: (DAGSTER_\w+)", instance):
        assert name in data or name in SECRET_KEYS, name
    assert not set(data) & SECRET_KEYS


def test_vllm_runs_as_its_own_deployment_with_a_gpu_health_probes_and_a_secret_api_key():
    docs = {d["kind"]: d for d in _load(DEPLOY / "k8s" / "vllm.yaml")}
    deployment, service = docs["Deployment"], docs["Service"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert "--enable-prefix-caching" in args
    assert any(re.fullmatch(r"--max-model-len=\d+", a) for a in args)
    assert "--api-key=$(LLM_API_KEY)" in args and "--model=$(LLM_MODEL)" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["LLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": ENV_SECRET, "key": "LLM_API_KEY"}
    assert env["LLM_MODEL"]["valueFrom"]["configMapKeyRef"]["name"] == ENV_CONFIG_MAP
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    # One vLLM engine on one GPU, sized in one place: the offline enrichment step's numbers.
    assert container["resources"] == OFFLINE_VLLM_RESOURCES
    [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": SHM_SIZE}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    # The Service is what LLM_BASE_URL names, and it selects these pods on the container's port.
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    port = service["spec"]["ports"][0]["port"]
    assert _config_map()["LLM_BASE_URL"] == f"http://{service['metadata']['name']}:{port}/v1"
    assert {"containerPort": port, "name": "http"} in container["ports"]


def _requirements_module():
    spec = importlib.util.spec_from_file_location("image_requirements", DEPLOY / "docker" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_image_pins_torch_2_13_and_no_vllm_and_the_gpu_image_adds_the_gpu_extra():
    requirements = _requirements_module().requirements
    assert requirements("torch") == ["torch==2.13.0"]
    cpu, gpu = requirements("cpu"), requirements("gpu")
    assert "torch==2.13.0" in cpu and not any(r.startswith("vllm") for r in cpu)
    assert not any(r.startswith("torch") for r in gpu) and any(r.startswith("vllm") for r in gpu)
    assert set(cpu) - set(gpu) == {"torch==2.13.0"}
    with pytest.raises(ValueError):
        requirements("cuda")
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in dockerfile and "deploy/docker/requirements.py" in dockerfile
    assert "--module-name" in dockerfile and "llm_assets.definitions" in dockerfile
