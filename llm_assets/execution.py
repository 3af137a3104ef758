"""Where each step runs: the executor per environment and the pods of the heavy steps.

- `local`: Dagster's default executor (in-process under `materialize`, one process per step for
  launched runs). Nothing here knows about Kubernetes.
- `prod`: `k8s_job_executor`, each step its own Kubernetes Job in the code location's image
  (the chart's user deployment sets it), in `DAGSTER_K8S_NAMESPACE`, with the same ConfigMap
  and Secret as the code location. The heavy steps get their pods from `per_step_k8s_config`,
  keyed by op name, so they need no tags: `enriched/cases` requests a GPU (and runs in
  `LLM_ASSETS_GPU_IMAGE`, the image with the `gpu` extra) when `LLM_BACKEND=offline`, and the
  embedding steps get CPU and memory for the sentence-transformers model.

Step-level `dagster-k8s/config` only takes effect under a step-level executor: with the
`K8sRunLauncher` alone every step runs in the run's pod. The names of the ConfigMap, Secret and
namespace variable are shared with `deploy/`.
"""

import dagster as dg

from llm_assets import settings
from llm_assets.asset_keys import EMBEDDING_GATE, ENRICHED_CASES, KB_INDEX

ENV_CONFIG_MAP = "llm-assets-env"  # DELTA_ROOT, KAFKA_BOOTSTRAP_SERVERS, MILVUS_URI, LLM_*, ARTIFACT_ROOT...
ENV_SECRET = "llm-assets-secrets"  # LLM_API_KEY, AUDIT_SIGNING_KEY, object-store credentials
NAMESPACE_ENV = "DAGSTER_K8S_NAMESPACE"
GPU_IMAGE_ENV = settings.GPU_IMAGE_VARIABLE
GPU_RESOURCE = "nvidia.com/gpu"

# The step that loads the model in-process under `LLM_BACKEND=offline`; the steps that embed text.
GPU_STEP_KEYS = (ENRICHED_CASES,)
EMBEDDING_STEP_KEYS = (KB_INDEX, EMBEDDING_GATE)

# Any step: Delta reads/writes and Kafka, small.
DEFAULT_STEP_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
# all-MiniLM-L6-v2 on CPU: torch threads per core, the model and a batch of texts.
EMBEDDING_STEP_RESOURCES = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "6Gi"}}
# A vLLM engine on one GPU: a 7B instruct model in bf16 with its KV cache on the GPU; host memory for
# loading the weights. The one place these numbers live: the offline enrichment step's pod, and the
# vLLM Deployment (deploy/k8s/vllm.yaml, which tests/deploy/test_manifests.py holds equal to them).
# The limit leaves room for the memory-backed /dev/shm (SHM_SIZE), which counts against it.
OFFLINE_VLLM_RESOURCES = {"requests": {"cpu": "8", "memory": "48Gi", GPU_RESOURCE: "1"},
                          "limits": {"memory": "64Gi", GPU_RESOURCE: "1"}}
# vLLM's workers share tensors through /dev/shm; the container default (64 MiB) is too small.
SHM_SIZE = "16Gi"


def step_op_name(key: dg.AssetKey) -> str:
    """The op (and step) name Dagster gives an asset declared with `key=`: `enriched/cases` -> `enriched__cases`."""
    return key.to_python_identifier()


def embedding_step_k8s_config() -> dict:
    return {"container_config": {"resources": EMBEDDING_STEP_RESOURCES}}


def gpu_step_k8s_config(backend: str | None) -> dict:
    """The pod of the enrichment step: a GPU for in-process vLLM, else an embedding step's CPU.

    `backend` is the `LLM_BACKEND` the code location runs with; only `offline` loads a model in
    the step (the `server` backend talks to the vLLM Deployment, `local` uses no LLM).
    """
    if (backend or "").strip().lower() != "offline":
        return embedding_step_k8s_config()
    container: dict = {"resources": OFFLINE_VLLM_RESOURCES,
                       "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}]}
    gpu_image = settings.gpu_image()
    if gpu_image:  # unset: the whole code location already runs the GPU image
        container["image"] = gpu_image
    return {
        "container_config": container,
        "pod_spec_config": {
            "volumes": [{"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": SHM_SIZE}}],
            # GPU node pools are usually tainted so that only pods asking for a GPU land there.
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def per_step_k8s_config(backend: str | None) -> dict[str, dict]:
    """`k8s_job_executor`'s per-op pods: the GPU step and the embedding steps, by op name."""
    steps = {step_op_name(key): embedding_step_k8s_config() for key in EMBEDDING_STEP_KEYS}
    steps.update({step_op_name(key): gpu_step_k8s_config(backend) for key in GPU_STEP_KEYS})
    return steps


def k8s_executor_config(backend: str | None) -> dict:
    """Run config of the production `k8s_job_executor` (the namespace is read when a run starts)."""
    return {
        "job_namespace": {"env": NAMESPACE_ENV},
        "env_config_maps": [ENV_CONFIG_MAP],
        "env_secrets": [ENV_SECRET],
        "image_pull_policy": "IfNotPresent",
        # Pods of one run at once; the instance's pools bound the LLM and Milvus steps across runs.
        "max_concurrent": 8,
        "step_k8s_config": {"container_config": {"resources": DEFAULT_STEP_RESOURCES}},
        "per_step_k8s_config": per_step_k8s_config(backend),
    }


def executor_for(environment: str, backend: str | None = None) -> dg.ExecutorDefinition:
    """The executor of `environment` (`LLM_ASSETS_ENV`): `local` or `prod`.

    `backend` defaults to `LLM_BACKEND` as the code location sees it when its definitions load.
    """
    if environment == "local":
        return dg.multi_or_in_process_executor
    if environment == "prod":
        # Imported here: dagster_k8s (the kubernetes client) costs about 1.5 s, and locally every run
        # (the sensor's micro-batches too) imports the code location.
        from dagster_k8s import k8s_job_executor

        backend = backend if backend is not None else settings.llm_backend("server")
        return k8s_job_executor.configured(k8s_executor_config(backend), name="llm_assets_k8s_job_executor")
    raise ValueError(f"LLM_ASSETS_ENV={environment!r}: expected one of ['local', 'prod']")
