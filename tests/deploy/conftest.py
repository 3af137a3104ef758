"""Fixtures of the deployment tests: the production instance rendered for this machine, the
Kubernetes API stand-in with a throwaway kubeconfig, and a real Postgres when one is given."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest
import yaml

from tests.deploy.k8s_api_stub import KubernetesApiStub

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NAMESPACE = "llm-assets-test"
# What the chart's user deployment puts in the code location's origin (DAGSTER_CURRENT_IMAGE);
# jobs executed from a test have no such origin, so the run launcher carries it instead.
CODE_LOCATION_IMAGE = "registry.example.com/llm-assets:test"
GPU_IMAGE = "registry.example.com/llm-assets-gpu:test"


def production_instance_config() -> dict:
    return yaml.safe_load((DEPLOY / "dagster.yaml").read_text())


def load_instance(home: Path, config: dict) -> dg.DagsterInstance:
    """A DagsterInstance from `config` written as `home/dagster.yaml`, as Dagster reads it."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))


def k8s_instance_config(home: Path, kubeconfig: Path) -> dict:
    """deploy/dagster.yaml, outside a cluster: the throwaway kubeconfig, storage in `home`
    (Postgres storage has its own test), and the image a code location would supply."""
    config = copy.deepcopy(production_instance_config())
    config["storage"] = {"sqlite": {"base_dir": str(home)}}
    launcher = config["run_launcher"]["config"]
    launcher.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig), job_image=CODE_LOCATION_IMAGE)
    return config


@pytest.fixture
def kube_api(tmp_path) -> Iterator[KubernetesApiStub]:
    """The Kubernetes API stand-in; records Jobs, runs none."""
    stub = KubernetesApiStub().start()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture
def k8s_env(monkeypatch):
    """The environment the production instance and executor read (the ConfigMap's, in a cluster)."""
    monkeypatch.setenv("DAGSTER_K8S_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("LLM_ASSETS_GPU_IMAGE", GPU_IMAGE)
    monkeypatch.setenv("LLM_BACKEND", "offline")
