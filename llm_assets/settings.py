"""Where llm-assets keeps its state, read from the environment (ARCHITECTURE section 5).

Pure functions with no Dagster import, so the CLI, the resources and the tests all
resolve the same paths the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:9092"
EVENTS_TOPIC = "events.raw"
ENRICHED_TOPIC = "cases.enriched"
CONSUMER_GROUP = "llm-assets-ingest"


def llm_assets_home() -> Path:
    """The local state folder: Delta tables, the Milvus Lite file, audit bundles."""
    return Path(os.environ.get("LLM_ASSETS_HOME", ".llm_assets")).resolve()


def delta_root() -> str:
    """Root of every Delta table; a local folder by default, `s3://...` in production."""
    return os.environ.get("DELTA_ROOT") or str(llm_assets_home() / "delta")


def table_uri(root: str, key: str) -> str:
    """`{DELTA_ROOT}/{key prefix}/{key name}` for an asset key written `prefix/name`."""
    return f"{root.rstrip('/')}/{key.strip('/')}"


def kafka_bootstrap_servers() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP_SERVERS)


def milvus_uri() -> str:
    """A Milvus Lite file by default; a URL (`http://...`) for a server."""
    return os.environ.get("MILVUS_URI") or str(llm_assets_home() / "milvus" / "kb.db")


def sample_data_dir() -> Path:
    """Where the seeded sample data (signals, exceptions, KB corpus, golden sets) lives."""
    return Path(os.environ.get("SAMPLE_DATA_DIR", str(llm_assets_home() / "sample_data"))).resolve()


def audit_dir() -> Path:
    return llm_assets_home() / "audit"
