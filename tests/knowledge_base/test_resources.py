"""`EmbedderResource` and `MilvusResource` on the real packaged model and a real Milvus Lite file."""

from dataclasses import asdict

import numpy as np
import pytest

from llm_assets.encoders.bert import BertMeanPoolingEncoder
from llm_assets.knowledge_base.chunking import ChunkingParams, chunk_documents
from llm_assets.knowledge_base.corpus import load_corpus, load_golden_queries
from llm_assets.knowledge_base.indexing import build_kb_index
from llm_assets.knowledge_base.retrieval import current_kb_index_version, retrieve
from llm_assets.resources.embedder import EmbedderResource, load_sentence_model
from llm_assets.resources.milvus import MilvusResource

pytestmark = pytest.mark.integration


def test_embedder_returns_unit_float32_vectors_in_batches_and_a_stable_model_id(embedder):
    vectors = embedder.encode(["card used abroad", "settlement report differs", "value date"] * 20)

    assert vectors.dtype == np.float32 and vectors.shape == (60, embedder.dimension) == (60, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[3], atol=1e-5)
    assert embedder.model_id.startswith("sentence-transformers/all-MiniLM-L6-v2@")
    assert EmbedderResource(batch_size=8).model_id == embedder.model_id
    assert embedder.encode([]).shape == (0, 384)


def test_the_packaged_model_runs_in_numpy_without_torch_and_gives_sentence_transformers_vectors(embedder):
    # Each run is a new process: the plain BERT + mean pooling path imports neither sentence-transformers nor torch.
    import subprocess
    import sys

    texts = ["  Card 4111 1111 1111 1111 declined for partner P-001 ", "routing mismatch " * 300, "Ünïcødé café",
             ""] + [f"case {i}: settlement differs" for i in range(40)]
    direct = load_sentence_model(embedder.resolved_model_path)
    assert isinstance(direct, BertMeanPoolingEncoder) and isinstance(embedder.model(), BertMeanPoolingEncoder)
    reference = load_sentence_model(embedder.resolved_model_path, direct=False)
    expected = reference.encode(texts, batch_size=8, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)
    assert np.abs(embedder.encode(texts) - expected).max() < 1e-5
    code = ("import sys; from llm_assets.resources.embedder import EmbedderResource; "
            "v = EmbedderResource().encode(['card declined abroad', 'x']); "
            "print(v.shape, 'sentence_transformers' in sys.modules, 'torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "(2, 384) False False"


def test_embedding_model_must_be_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDDING_MODEL", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="local path"):
        EmbedderResource().model_id


def test_a_reopened_milvus_lite_file_serves_the_published_version(tmp_path, kb_dir, golden_path, embedder):
    uri = str(tmp_path / "milvus" / "kb.db")
    chunks = [asdict(c) for c in chunk_documents(load_corpus(kb_dir).documents, ChunkingParams())]
    writer = MilvusResource(uri=uri)
    build = build_kb_index(chunks, writer, embedder, load_golden_queries(golden_path))
    writer.close()

    reader = MilvusResource(uri=uri)  # collections come back released: loaded on first use
    assert current_kb_index_version(reader) == build.version
    (hits,) = retrieve(reader, embedder, ["what does partner_risk_tier mean"], top_k=3)
    assert hits[0].doc_id == "data-dictionary-partner_risk_tier" and hits[0].type == "data_dictionary"
    reader.close()


def test_unknown_index_types_are_refused():
    with pytest.raises(ValueError, match="IVF_FLAT"):
        MilvusResource(uri="unused.db", index_type="DISKANN").index_params(100)


def test_a_milvus_lite_file_path_in_milvus_uri_does_not_break_pymilvus(tmp_path):
    # pymilvus reads MILVUS_URI at import and accepts only URLs; the contract allows a file path.
    import os
    import subprocess
    import sys

    db = tmp_path / "milvus" / "kb.db"
    code = ("from llm_assets.resources.milvus import MilvusResource; "
            "r = MilvusResource(); print(r.resolved_uri); r.client.list_collections(); r.close()")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MILVUS_URI": str(db)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(db)
    assert db.exists()
