"""KB retrieval for enrichment, and the recall@k measure that gates a new index version.

`retrieve` always queries the alias `kb`, so callers follow the blue-green switch: while
a rebuilt version fails its checks, the alias (and so retrieval) stays on the previous
version. Query embeddings are computed in one batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from llm_assets.knowledge_base.corpus import GoldenQuery
from llm_assets.knowledge_base.versioning import PROP_VERSION, version_of

if TYPE_CHECKING:
    from llm_assets.resources.embedder import EmbedderResource
    from llm_assets.resources.milvus import MilvusResource

KB_ALIAS = "kb"


@dataclass(frozen=True)
class RetrievedChunk:
    doc_id: str
    chunk_id: str
    type: str
    label: str | None
    score: float
    content: str
    source: str = ""
    actions: list[dict] | None = None  # the resolution of a resolved case, when the KB has one


def _to_chunk(hit: dict) -> RetrievedChunk:
    actions = hit.get("actions") or None
    return RetrievedChunk(doc_id=hit.get("doc_id", ""), chunk_id=hit.get("chunk_id", ""), type=hit.get("type", ""),
                          label=hit.get("label") or None, score=float(hit["score"]), content=hit.get("content", ""),
                          source=hit.get("source", ""), actions=json.loads(actions) if actions else None)


def search_chunks(milvus: "MilvusResource", embedder: "EmbedderResource", collection: str, queries: Sequence[str],
                  top_k: int) -> list[list[RetrievedChunk]]:
    """Top-`top_k` chunks per query in `collection` (a collection name or an alias)."""
    if not queries:
        return []
    vectors = embedder.encode(list(queries))
    return [[_to_chunk(h) for h in hits] for hits in milvus.search(collection, vectors, top_k)]


def current_kb_index_version(milvus: "MilvusResource", alias: str = KB_ALIAS) -> str | None:
    """The `kb_index_version` the alias serves, or None when no index was published yet."""
    target = milvus.alias_target(alias)
    if target is None:
        return None
    return milvus.collection_properties(target).get(PROP_VERSION) or version_of(target)


def retrieve(milvus: "MilvusResource", embedder: "EmbedderResource", queries: list[str],
             top_k: int = 5) -> list[list[RetrievedChunk]]:
    """The `top_k` best KB chunks for each query from the serving version (alias `kb`).

    With no published index every query gets an empty list (enrichment then runs
    without context rather than failing).
    """
    if milvus.alias_target(KB_ALIAS) is None:
        return [[] for _ in queries]
    return search_chunks(milvus, embedder, KB_ALIAS, queries, top_k)


def top_documents(chunks: Sequence[RetrievedChunk], k: int) -> list[str]:
    """The first `k` distinct document ids among ranked chunks."""
    return list(dict.fromkeys(c.doc_id for c in chunks))[:k]


@dataclass(frozen=True)
class QueryRecall:
    query: str
    relevant: tuple[str, ...]
    retrieved: tuple[str, ...]
    recall: float


@dataclass(frozen=True)
class RecallReport:
    k: int
    recall: float
    per_query: list[QueryRecall] = field(default_factory=list)

    @property
    def worst(self) -> list[QueryRecall]:
        return sorted(self.per_query, key=lambda q: q.recall)[:5]


def recall_at_k(golden: Sequence[GoldenQuery], retrieved_doc_ids: Sequence[Sequence[str]], k: int) -> RecallReport:
    """Mean over queries of |relevant ∩ top-k documents| / |relevant|."""
    per_query = []
    for query, ranked in zip(golden, retrieved_doc_ids, strict=True):
        top = tuple(ranked[:k])
        relevant = set(query.relevant_doc_ids)
        per_query.append(QueryRecall(query.query, query.relevant_doc_ids, top, len(relevant & set(top)) / len(relevant)))
    mean = sum(q.recall for q in per_query) / len(per_query) if per_query else 0.0
    return RecallReport(k, mean, per_query)


def evaluate_recall(milvus: "MilvusResource", embedder: "EmbedderResource", collection: str,
                    golden: Sequence[GoldenQuery], k: int = 5) -> RecallReport:
    """recall@k of `collection` on the golden queries (documents, not chunks, are counted)."""
    hits = search_chunks(milvus, embedder, collection, [g.query for g in golden], top_k=k * 4)
    return recall_at_k(golden, [top_documents(h, k) for h in hits], k)
