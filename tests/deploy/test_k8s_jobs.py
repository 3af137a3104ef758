"""What the production instance and executor send to Kubernetes, against the API stand-in."""

from __future__ import annotations

import importlib
import sys

import dagster as dg
import pytest
from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job
from dagster_k8s.job import UserDefinedDagsterK8sConfig

from llm_assets.asset_keys import EMBEDDING_GATE, ENRICHED_CASES, KB_INDEX
from llm_assets.execution import (
    DEFAULT_STEP_RESOURCES,
    EMBEDDING_STEP_RESOURCES,
    ENV_CONFIG_MAP,
    ENV_SECRET,
    GPU_RESOURCE,
    executor_for,
    gpu_step_k8s_config,
    per_step_k8s_config,
    step_op_name,
)
from tests.deploy.conftest import CODE_LOCATION_IMAGE, GPU_IMAGE, NAMESPACE, REPO, k8s_instance_config, load_instance
from tests.deploy.k8s_api_stub import KubernetesApiStub

pytestmark = pytest.mark.integration


def _container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def _env_from(container: dict) -> set[tuple[str, str]]:
    return {("configMap", e["configMapRef"]["name"]) if "configMapRef" in e else ("secret", e["secretRef"]["name"])
            for e in container.get("envFrom", [])}


def test_the_enrichment_step_job_requests_a_gpu_in_the_gpu_image_only_for_the_offline_backend(k8s_env):
    def step_job(backend: str) -> dict:
        job = construct_dagster_k8s_job(
            DagsterK8sJobConfig(job_image=CODE_LOCATION_IMAGE, dagster_home="/opt/dagster/dagster_home",
                                instance_config_map="llm-assets-dagster-instance"),
            args=["dagster", "api", "execute_step"], job_name="dagster-step-enriched-cases",
            user_defined_k8s_config=UserDefinedDagsterK8sConfig.from_dict(gpu_step_k8s_config(backend)),
            component="step_worker")
        return job.to_dict()

    offline = step_job("offline")
    container = offline["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == GPU_IMAGE
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    assert container["resources"]["requests"][GPU_RESOURCE] == "1"
    assert {"name": "dshm", "mount_path": "/dev/shm"}.items() <= container["volume_mounts"][-1].items()
    pod = offline["spec"]["template"]["spec"]
    assert any(t["key"] == GPU_RESOURCE for t in pod["tolerations"])

    served = step_job("server")["spec"]["template"]["spec"]["containers"][0]
    assert served["image"] == CODE_LOCATION_IMAGE
    assert GPU_RESOURCE not in (served["resources"]["limits"] or {})
    assert {k: served["resources"][k] for k in ("requests", "limits")} == EMBEDDING_STEP_RESOURCES


def test_per_step_pods_are_keyed_by_the_real_assets_op_names():
    from llm_assets.enrichment.assets import enriched_cases
    from llm_assets.gate.assets import embedding_gate
    from llm_assets.knowledge_base.assets import kb_index

    assert {step_op_name(ENRICHED_CASES), step_op_name(KB_INDEX), step_op_name(EMBEDDING_GATE)} == {
        enriched_cases.op.name, kb_index.op.name, embedding_gate.op.name}
    assert set(per_step_k8s_config("offline")) == {enriched_cases.op.name, kb_index.op.name, embedding_gate.op.name}


def test_launch_run_sends_the_run_worker_job_of_the_production_instance(tmp_path, kube_api, k8s_env):
    step_jobs = importlib.import_module("tests.deploy.step_jobs")
    instance = load_instance(tmp_path / "home", k8s_instance_config(tmp_path / "home", kube_api.write_kubeconfig(
        tmp_path / "kubeconfig")))
    run = instance.create_run_for_job(step_jobs.k8s_steps_job(), job_code_origin=dg.reconstructable(
        step_jobs.k8s_steps_job).get_python_origin())

    instance.launch_run(run.run_id, workspace=None)  # the K8sRunLauncher needs no workspace

    [sent] = kube_api.jobs
    assert sent["namespace"] == NAMESPACE
    job = sent["body"]
    assert job["metadata"]["labels"]["dagster/run-id"] == run.run_id
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "llm-assets-runs"
    container = _container(job)
    assert container["image"] == CODE_LOCATION_IMAGE
    assert container["args"][-3:-1] == ["api", "execute_run"]
    assert _env_from(container) == {("configMap", ENV_CONFIG_MAP), ("secret", ENV_SECRET)}
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    assert {"name": "DAGSTER_RUN_JOB_NAME", "value": "k8s_steps_job"} in container["env"]
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTING


def test_the_production_executor_runs_each_step_as_its_own_job_and_only_the_gpu_step_gets_a_gpu(
        tmp_path, k8s_env):
    stub = KubernetesApiStub(run_jobs=True, workdir=REPO, log_dir=tmp_path).start()
    try:
        home = tmp_path / "home"
        instance = load_instance(home, k8s_instance_config(home, stub.write_kubeconfig(tmp_path / "kubeconfig")))
        sys.modules.pop("tests.deploy.step_jobs", None)  # built with this test's environment
        step_jobs = importlib.import_module("tests.deploy.step_jobs")

        # This process plays the run pod; each step is a Job that the stand-in runs as a process.
        result = dg.execute_job(dg.reconstructable(step_jobs.k8s_steps_job), instance=instance)
        logs = {p.name: p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log")}
        assert result.success, logs
    finally:
        stub.stop()

    jobs = {j["body"]["metadata"]["labels"]["dagster/op"]: j for j in stub.jobs}
    assert set(jobs) == {"enriched__cases", "kb__index", "deploy_test__plain_step"}
    assert {j["namespace"] for j in jobs.values()} == {NAMESPACE}
    containers = {op: _container(j["body"]) for op, j in jobs.items()}
    for container in containers.values():
        assert container["args"][-2:] == ["api", "execute_step"]
        assert _env_from(container) == {("configMap", ENV_CONFIG_MAP), ("secret", ENV_SECRET)}

    gpu = containers["enriched__cases"]
    assert gpu["image"] == GPU_IMAGE
    assert gpu["resources"]["limits"][GPU_RESOURCE] == "1"
    assert any(t["key"] == GPU_RESOURCE for t in jobs["enriched__cases"]["body"]["spec"]["template"]["spec"]["tolerations"])
    assert containers["kb__index"]["resources"] == EMBEDDING_STEP_RESOURCES
    assert containers["kb__index"]["image"] == CODE_LOCATION_IMAGE
    assert containers["deploy_test__plain_step"]["resources"] == DEFAULT_STEP_RESOURCES

    # Each step ran in the process started for its Job, not in this one.
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            metadata = event.step_materialization_data.materialization.metadata
            assert metadata["step_key"].value == event.step_key


def test_the_local_environment_keeps_dagsters_default_executor():
    assert executor_for("local") is dg.multi_or_in_process_executor
    with pytest.raises(ValueError, match="LLM_ASSETS_ENV"):
        executor_for("staging")
