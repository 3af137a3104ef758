"""Fixtures of the model lifecycle tests: the OpenAI-compatible test server answering as several
model versions at once, a registry file naming them, and the resources of `models/evaluation`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llm_assets.lib.redaction import redact
from llm_assets.models.golden import golden_frame
from tests.support.openai_test_server import OpenAITestServer, rotated

GOOD, BAD, GOOD_TOO = "good-model@v1", "rotated-model@v1", "good-model@v2"


@pytest.fixture(scope="session")
def golden_oracle():
    """case text (redacted, as the prompt shows it) -> the golden label: a model that is always right."""
    frame = golden_frame()
    answers = {redact(text).text.strip(): label for text, label in frame.select("payload_raw", "expected_label").iter_rows()}
    return lambda case_text: answers.get(case_text.strip(), "other")


@pytest.fixture
def model_server(golden_oracle):
    """One test server answering as three model ids: `good` and `good-too` (the golden labels) and
    `rotated` (every label answered as the next one)."""
    with OpenAITestServer(slots=16, labelers={"good": golden_oracle, "good-too": golden_oracle,
                                              "rotated": rotated(golden_oracle)}) as server:
        yield server


def write_registry(path: Path, base_url: str, extra: list[dict] | None = None) -> Path:
    entries = [{"name": "local-rules@v1", "backend": "local"}]
    for name, model in ((GOOD, "good"), (BAD, "rotated"), (GOOD_TOO, "good-too")):
        entries.append({"name": name, "backend": "server", "endpoint": base_url, "model": model})
    path.write_text(yaml.safe_dump({"models": entries + list(extra or [])}))
    return path


@pytest.fixture
def registry_file(tmp_path, model_server) -> Path:
    return write_registry(tmp_path / "registry.yaml", f"{model_server.base_url}/v1")


@pytest.fixture(scope="session")
def embedder():
    from llm_assets.resources.embedder import EmbedderResource

    return EmbedderResource()


@pytest.fixture
def model_resources(tmp_path, embedder) -> dict:
    """Real Delta, Milvus Lite (no KB index published: enrichment runs without context), the packaged
    embedding model, an artifact store and the LLM transport's settings."""
    from llm_assets.resources.artifacts import ArtifactStore
    from llm_assets.resources.delta import DeltaLakeStorage
    from llm_assets.resources.llm import LLMResource
    from llm_assets.resources.milvus import MilvusResource

    return {"delta": DeltaLakeStorage(root=str(tmp_path / "delta")), "llm": LLMResource(max_concurrency=16),
            "milvus": MilvusResource(uri=str(tmp_path / "milvus" / "kb.db")), "embedder": embedder,
            "artifacts": ArtifactStore(root=str(tmp_path / "artifacts"))}
