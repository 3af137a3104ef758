"""Fixtures of the knowledge-base tests: a small real KB corpus, its golden queries, one
embedding model per test session, and a fresh Milvus Lite file per test."""

import json
from pathlib import Path

import dagster as dg
import pytest

from llm_assets.knowledge_base.definitions import defs as kb_defs
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.milvus import MilvusResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import golden_queries, kb_corpus

# Every reference document of the sample KB and a few resolved cases per label: the
# golden queries stay meaningful and the first build embeds ~50 chunks, not ~330.
RESOLVED_PER_LABEL = 4


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def small_corpus() -> dict[str, list[dict]]:
    return kb_corpus(resolved_per_label=RESOLVED_PER_LABEL)


@pytest.fixture(scope="session")
def embedder() -> EmbedderResource:
    model = EmbedderResource()
    model.model()  # load once for the whole session (module-level cache)
    return model


@pytest.fixture
def kb_dir(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    for name, rows in small_corpus().items():
        write_jsonl(root / f"{name}.jsonl", rows)
    return root


@pytest.fixture
def golden_path(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "golden" / "retrieval_queries.jsonl", golden_queries())


@pytest.fixture
def resources(tmp_path: Path, embedder: EmbedderResource) -> dict:
    return {
        "delta": DeltaLakeStorage(root=str(tmp_path / "delta")),
        "milvus": MilvusResource(uri=str(tmp_path / "milvus" / "kb.db")),
        "embedder": embedder,
    }


def materialize_kb(resources: dict, kb_dir: Path, golden_path: Path, *, documents: dict | None = None,
                   index: dict | None = None, keys: tuple[str, ...] = ("kb/documents", "kb/index"),
                   raise_on_error: bool = True, instance: dg.DagsterInstance | None = None,
                   ) -> dg.ExecuteInProcessResult:
    """Materialize the KB assets (and their checks) with the given config."""
    run_config = {"ops": {
        "kb__documents": {"config": {"corpus_dir": str(kb_dir), **(documents or {})}},
        "kb__index": {"config": {"golden_queries_path": str(golden_path), **(index or {})}},
    }}
    selection = dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(k) for k in keys])
    selected = {dg.AssetKey.from_user_string(k).to_python_identifier() for k in keys}
    run_config["ops"] = {op: cfg for op, cfg in run_config["ops"].items() if op in selected}
    return dg.materialize(list(kb_defs.assets), selection=selection, resources=resources,
                          run_config=run_config, raise_on_error=raise_on_error, instance=instance)


def index_metadata(result: dg.ExecuteInProcessResult) -> dict:
    """The `kb/index` materialization metadata as plain values."""
    (mat,) = [m for m in result.asset_materializations_for_node("kb__index")]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def check_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
