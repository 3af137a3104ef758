"""A code location of the model lifecycle for the GraphQL test: the models domain with its
resources under `MODELS_TEST_HOME` (set by the test before the code server starts)."""

import os

import dagster as dg

from llm_assets.asset_keys import KB_INDEX
from llm_assets.models.definitions import defs as models_defs
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource

_HOME = os.environ.get("MODELS_TEST_HOME", ".")

defs = dg.Definitions.merge(models_defs, dg.Definitions(
    assets=[dg.AssetSpec(KB_INDEX)],
    resources={"delta": DeltaLakeStorage(root=f"{_HOME}/delta"), "llm": LLMResource(),
               "milvus": MilvusResource(uri=f"{_HOME}/milvus/kb.db"), "embedder": EmbedderResource(),
               "artifacts": ArtifactStore(root=f"{_HOME}/artifacts")}))
