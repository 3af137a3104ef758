"""Resources per environment, from one small table (`LLM_ASSETS_ENV` = local | prod).

`local` resolves the embedded defaults at load time (a folder, tansu on 127.0.0.1,
Milvus Lite, the packaged embedding model, the local LLM backend unless `LLM_BASE_URL`
is set). `prod` reads every endpoint and secret through `EnvVar`, so a missing
variable is a clear launch-time error instead of a silent local fallback.
"""

import os

import dagster as dg

from llm_assets import settings
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.case_tool import CaseToolResource
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.kafka import KafkaIngestSettings, KafkaResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource
from llm_assets.resources.signing import SIGNING_KEY_VARIABLE, AuditSigner


def current_environment() -> str:
    return os.environ.get("LLM_ASSETS_ENV", "local")


def local_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "delta": DeltaLakeStorage(root=settings.delta_root()),
        "kafka": KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers()),
        # The ingest sensor's topic and limits (KAFKA_EVENTS_TOPIC, KAFKA_SENSOR_*, KAFKA_MAX_PAYLOAD_BYTES).
        "kafka_ingest": KafkaIngestSettings.from_variables(os.environ),
        "milvus": MilvusResource(uri=settings.milvus_uri()),
        "embedder": EmbedderResource(),
        "artifacts": ArtifactStore(root=settings.artifact_root()),
        # The key by EnvVar when set (the UI shows the variable, never the secret), else a local key file.
        "audit_signer": AuditSigner(key=dg.EnvVar(SIGNING_KEY_VARIABLE)) if os.environ.get(SIGNING_KEY_VARIABLE)
        else AuditSigner(key_file=str(settings.local_signing_key_file())),
        # Off (tickets report "not configured") until CASE_TOOL_URL and CASE_TOOL_PROJECT are set.
        "case_tool": CaseToolResource(
            base_url=os.environ.get("CASE_TOOL_URL", ""), user=os.environ.get("CASE_TOOL_USER", ""),
            token=dg.EnvVar("CASE_TOOL_TOKEN") if os.environ.get("CASE_TOOL_TOKEN") else "",  # never shown in the UI
            project=os.environ.get("CASE_TOOL_PROJECT", "")),
        "llm": LLMResource(
            backend=os.environ.get("LLM_BACKEND") or None,
            base_url=os.environ.get("LLM_BASE_URL") or None,
            model=os.environ.get("LLM_MODEL") or None,
            api_key=os.environ.get("LLM_API_KEY") or None,
        ),
    }


def production_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "delta": DeltaLakeStorage(
            root=dg.EnvVar("DELTA_ROOT"),
            # Concurrent writers on S3 need a locking provider (deploy/README.md).
            storage_options={"AWS_S3_LOCKING_PROVIDER": "dynamodb",
                             "DELTA_DYNAMO_TABLE_NAME": os.environ.get("DELTA_DYNAMO_TABLE_NAME", "delta_log")},
        ),
        "kafka": KafkaResource(bootstrap_servers=dg.EnvVar("KAFKA_BOOTSTRAP_SERVERS")),
        "kafka_ingest": KafkaIngestSettings.from_variables(os.environ),
        "milvus": MilvusResource(uri=dg.EnvVar("MILVUS_URI")),
        "embedder": EmbedderResource(),
        # Credentials of the object store come from the pod (IAM role / workload identity).
        "artifacts": ArtifactStore(root=dg.EnvVar("ARTIFACT_ROOT")),
        # No local fallback: a run without AUDIT_SIGNING_KEY is refused at launch, before any write.
        "audit_signer": AuditSigner(key=dg.EnvVar(SIGNING_KEY_VARIABLE)),
        # Optional: each set variable goes through EnvVar (the UI shows its name, never the token).
        "case_tool": CaseToolResource(**{field: dg.EnvVar(var) for var, field in (
            ("CASE_TOOL_URL", "base_url"), ("CASE_TOOL_USER", "user"), ("CASE_TOOL_TOKEN", "token"),
            ("CASE_TOOL_PROJECT", "project")) if os.environ.get(var)}),
        "llm": LLMResource(
            backend=os.environ.get("LLM_BACKEND", "server"),
            base_url=dg.EnvVar("LLM_BASE_URL"),
            model=dg.EnvVar("LLM_MODEL"),
            api_key=dg.EnvVar("LLM_API_KEY"),
        ),
    }


def resources_for(environment: str) -> dict[str, dg.ConfigurableResource]:
    table = {"local": local_resources, "prod": production_resources}
    if environment not in table:
        raise ValueError(f"LLM_ASSETS_ENV={environment!r}: expected one of {sorted(table)}")
    return table[environment]()
