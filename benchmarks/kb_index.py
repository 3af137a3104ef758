"""`kb/index` build throughput against a raw `SentenceTransformer.encode`, and query latency.

Builds the sample KB (every reference document plus `resolved_per_label` resolved cases
per label) and times, in the same process with the model already loaded:

1. raw: `SentenceTransformer.encode(texts, batch_size=32, normalize_embeddings=True)` of
   every chunk text;
2. the kb/index path, fresh: `build_kb_index` on an empty Milvus Lite folder (versioning,
   embedding, collection create + insert + flush, recall@5 check, alias switch);
   1 and 2 alternate for `rounds` rounds (the CPU is shared), best-of and medians compared;
3. a rebuild with no change (0 embeddings), and query latency: `retrieve()` of one query
   at a time (embedding + per-type searches), and the Milvus search alone.

Prints chunks/s of both, their ratio (goal >= 0.9) and latency p50/p95.
Run: `.venv/bin/python benchmarks/kb_index.py [resolved_per_label=100] [index_type=HNSW] [rounds=3]`.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from llm_assets.knowledge_base.chunking import ChunkingParams, chunk_documents
from llm_assets.knowledge_base.corpus import GoldenQuery, parse_kb_line
from llm_assets.knowledge_base.indexing import build_kb_index
from llm_assets.knowledge_base.retrieval import KB_ALIAS, retrieve, search_vectors
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.milvus import MilvusResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import golden_queries, kb_corpus


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main(resolved_per_label: int = 100, index_type: str = "HNSW", rounds: int = 3) -> None:
    corpus = kb_corpus(resolved_per_label=resolved_per_label)
    docs = [parse_kb_line(json.dumps(row), name) for name, rows in corpus.items() for row in rows]
    chunks = [asdict(c) for c in chunk_documents(docs, ChunkingParams())]
    texts = [c["content"] for c in chunks]
    golden = [GoldenQuery(q["query"], tuple(q["relevant_doc_ids"])) for q in golden_queries()]
    embedder = EmbedderResource(batch_size=32)
    t0 = time.perf_counter()
    model = embedder.model()
    model.encode(texts[:64], batch_size=32, normalize_embeddings=True)  # warm-up
    embedder.model_id  # hashed once per process, like the model load
    print(f"model load + warm-up: {time.perf_counter() - t0:.1f} s; {len(docs)} documents, {len(chunks)} chunks")

    def raw_encode() -> float:
        start = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        return time.perf_counter() - start

    # The CPU is shared: alternate raw and kb/index runs, compare best-of and medians.
    raw_times, build_times, builds = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            raw_times.append(raw_encode())
            milvus = MilvusResource(uri=str(Path(tmp) / f"kb-{r}.db"), index_type=index_type)
            start = time.perf_counter()
            builds.append(build_kb_index(chunks, milvus, embedder, golden))
            build_times.append(time.perf_counter() - start)
            if r < rounds - 1:
                milvus.close()
        build = builds[-1]

        start = time.perf_counter()
        again = build_kb_index(chunks, milvus, embedder, golden)
        rebuild = time.perf_counter() - start

        queries = [g.query for g in golden] * 3
        retrieve(milvus, embedder, queries[:2])  # warm the searcher
        per_query = []
        for q in queries:
            start = time.perf_counter()
            retrieve(milvus, embedder, [q])
            per_query.append((time.perf_counter() - start) * 1000)
        vectors = embedder.encode(queries)
        search_only = []
        for v in vectors:
            start = time.perf_counter()
            search_vectors(milvus, KB_ALIAS, v[None, :], top_k=5)
            search_only.append((time.perf_counter() - start) * 1000)
        milvus.close()

    n = len(chunks)
    raw_best, build_best = n / min(raw_times), n / min(build_times)
    raw_med, build_med = n / statistics.median(raw_times), n / statistics.median(build_times)
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in build.seconds.items())
    print(f"raw SentenceTransformer.encode: best {raw_best:7.1f} chunks/s, median {raw_med:7.1f}  "
          f"(runs: {', '.join(f'{t:.1f}' for t in raw_times)} s)")
    print(f"kb/index fresh build:           best {build_best:7.1f} chunks/s, median {build_med:7.1f}  "
          f"(runs: {', '.join(f'{t:.1f}' for t in build_times)} s; last: {parts})")
    print(f"ratio kb/index / raw encode:    best-of {build_best / raw_best:.3f}, median {build_med / raw_med:.3f}"
          f"  (goal >= 0.9)")
    print(f"index {index_type}: recall@5 {build.recall.recall:.3f}, published={build.published}")
    print(f"rebuild, no change:             {rebuild:8.2f} s  (embeddings computed: {again.embeddings_computed}, "
          f"same version: {again.version == build.version})")
    p50, p95 = _percentiles(per_query)
    s50, s95 = _percentiles(search_only)
    print(f"retrieve() 1 query:             p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  (n={len(per_query)})")
    print(f"Milvus search only (per-type):  p50 {s50:6.1f} ms  p95 {s95:6.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, sys.argv[2] if len(sys.argv) > 2 else "HNSW",
         int(sys.argv[3]) if len(sys.argv) > 3 else 3)
