"""Resources per environment, from one small table (`LLM_ASSETS_ENV` = local | prod).

`local` resolves the embedded defaults at load time (a folder, tansu on 127.0.0.1,
Milvus Lite, the packaged embedding model, the local LLM backend unless `LLM_BASE_URL`
is set). `prod` reads every endpoint and secret through `EnvVar`, so a missing
variable is a clear launch-time error instead of a silent local fallback.
"""

import os

import dagster as dg

from llm_assets import settings
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.kafka import KafkaResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource


def current_environment() -> str:
    return os.environ.get("LLM_ASSETS_ENV", "local")


def local_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "delta": DeltaLakeStorage(root=settings.delta_root()),
        "kafka": KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers()),
        "milvus": MilvusResource(uri=settings.milvus_uri()),
        "embedder": EmbedderResource(),
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
        "milvus": MilvusResource(uri=dg.EnvVar("MILVUS_URI")),
        "embedder": EmbedderResource(),
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
