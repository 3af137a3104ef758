"""One run of `curated/cases` + `enriched/cases` over one date, in-process or as a process of its own
(`python -m tests.enrichment.outbox_run ROOT BOOTSTRAP DAY`, for the crash tests to kill)."""

from __future__ import annotations

import sys
from pathlib import Path

from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.kafka import KafkaResource
from llm_assets.resources.llm import LLMResource
from llm_assets.resources.milvus import MilvusResource
from tests.support.pipeline import artifact_resources, materialize_keys

# The unpartitioned tables curated/cases joins with; no KB index or gate: the local strategy decides.
SEEDS = ["features/entity_signals", "signals/exceptions"]


def resources_of(root: Path, bootstrap: str, milvus_uri: str | None = None) -> dict:
    """The run's resources; `milvus_uri` a `milvus-lite server` when several processes share the KB
    (a Milvus Lite file admits one process for its lifetime)."""
    return {
        "delta": DeltaLakeStorage(root=str(root / "delta")),
        "milvus": MilvusResource(uri=milvus_uri or str(root / "milvus" / "kb.db")),
        "embedder": EmbedderResource(),
        "kafka": KafkaResource(bootstrap_servers=bootstrap),
        "llm": LLMResource(),
        **artifact_resources(root),
    }


def run_day(resources: dict, day: str, instance=None):
    return materialize_keys(resources, ["curated/cases", "enriched/cases"], partition_key=day,
                            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
                            instance=instance)


if __name__ == "__main__":
    root, bootstrap, day, milvus_uri = sys.argv[1:5]
    sys.exit(0 if run_day(resources_of(Path(root), bootstrap, milvus_uri), day).success else 1)
