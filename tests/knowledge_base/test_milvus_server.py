"""Several processes retrieving at once through `milvus-lite server` (a Lite file admits one)."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from llm_assets.knowledge_base.chunking import ChunkingParams, chunk_documents
from llm_assets.knowledge_base.corpus import load_corpus, load_golden_queries
from llm_assets.knowledge_base.indexing import build_kb_index
from llm_assets.knowledge_base.retrieval import current_kb_index_version
from llm_assets.dev.milvus import start_milvus_server
from llm_assets.resources.milvus import MilvusResource

pytestmark = pytest.mark.integration

# Each reader connects, waits until every reader is connected (so the connections are
# open at the same time), then runs its searches through the retrieval path of the alias.
READER = """
import json, sys, time
from pathlib import Path
import numpy as np
from llm_assets.knowledge_base.retrieval import KB_ALIAS, current_kb_index_version, search_vectors
from llm_assets.resources.milvus import MilvusResource

uri, vectors_path, ready_dir, me, readers, out = sys.argv[1:7]
milvus = MilvusResource(uri=uri)
version = current_kb_index_version(milvus)
Path(ready_dir, me).touch()
deadline = time.monotonic() + 60
while len(list(Path(ready_dir).iterdir())) < int(readers):
    assert time.monotonic() < deadline, "the other reader never connected"
    time.sleep(0.05)
vectors = np.load(vectors_path)
tops = []
for _ in range(5):
    hits = search_vectors(milvus, KB_ALIAS, vectors, top_k=5)
    tops = [[h.doc_id for h in q] for q in hits]
milvus.close()
Path(out).write_text(json.dumps({"version": version, "tops": tops}))
"""


def test_two_processes_retrieve_at_once_through_milvus_lite_server(tmp_path, kb_dir, golden_path, embedder):
    server = start_milvus_server(tmp_path / "milvus-server")
    try:
        milvus = MilvusResource(uri=server.uri)
        chunks = [asdict(c) for c in chunk_documents(load_corpus(kb_dir).documents, ChunkingParams())]
        golden = load_golden_queries(golden_path)
        build = build_kb_index(chunks, milvus, embedder, golden)
        assert build.published
        milvus.close()
        queries = [g.query for g in golden[:4]]
        np.save(tmp_path / "queries.npy", embedder.encode(queries))
        (tmp_path / "ready").mkdir()

        readers = [subprocess.Popen([sys.executable, "-c", READER, server.uri, str(tmp_path / "queries.npy"),
                                     str(tmp_path / "ready"), f"reader-{i}", "2", str(tmp_path / f"out-{i}.json")],
                                    cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE, text=True)
                   for i in range(2)]
        for reader in readers:
            _, err = reader.communicate(timeout=120)
            assert reader.returncode == 0, err[-3000:]

        outputs = [json.loads((tmp_path / f"out-{i}.json").read_text()) for i in range(2)]
        assert outputs[0] == outputs[1]
        assert outputs[0]["version"] == build.version
        for query, top in zip(golden[:4], outputs[0]["tops"]):
            assert set(query.relevant_doc_ids) & set(top), (query.query, top)
    finally:
        assert server.stop() is not None

    # The server keeps its data in its folder across restarts.
    with start_milvus_server(tmp_path / "milvus-server") as again:
        reopened = MilvusResource(uri=again.uri)
        assert current_kb_index_version(reopened) == build.version
        reopened.close()


def test_a_run_waits_for_a_milvus_server_that_comes_back_within_its_outage_budget(tmp_path):
    import threading

    import pytest

    from llm_assets.dev.process import free_port
    from llm_assets.resources.milvus import MilvusUnavailableError

    port = free_port()
    down = MilvusResource(uri=f"http://127.0.0.1:{port}", outage_budget_s=2)
    with pytest.raises(MilvusUnavailableError, match="unavailable for 2s"):
        down.client  # nobody listens: the budget runs out, then the step fails with the reason

    started, launching = [], threading.Event()

    def start_late():
        launching.set()
        started.append(start_milvus_server(tmp_path / "late", port=port))

    later = threading.Timer(3.0, start_late)
    later.start()
    try:
        waiting = MilvusResource(uri=f"http://127.0.0.1:{port}", outage_budget_s=60)
        assert current_kb_index_version(waiting) is None  # connected once the server came up: no KB yet
        assert launching.is_set(), "connected before the server existed"
        waiting.close()
    finally:
        later.join()
        for server in started:
            server.stop()
