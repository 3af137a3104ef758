"""Building one KB index version in Milvus and switching the alias blue-green.

Steps: version the chunks -> reuse the version's collection if it is already complete,
else create it, fetching the vectors of unchanged chunks (same chunk id, same model) from
the existing version collections and embedding only the rest -> count the vectors ->
measure recall@5 on the golden queries against the NEW collection -> move the alias only
if both checks pass -> drop version collections beyond the rollback window. Without a
golden set (a domain pack that names none) recall cannot be measured: the candidate is
published on its vector count alone, and the build says so (`recall_measured` False).

Embedding reuse needs no extra store: every version collection already holds its
vectors by chunk id, and the collection's `kb.model_id` property says which model made
them (a model change never reuses a vector). No Dagster import: the asset is a thin
wrapper, and the benchmark runs this same path.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from llm_assets.knowledge_base.corpus import GoldenQuery
from llm_assets.knowledge_base.retrieval import (
    KB_ALIAS,
    RecallReport,
    RetrievedChunk,
    recall_at_k,
    search_chunks,
    top_documents,
)
from llm_assets.knowledge_base.versioning import (
    COLLECTION_PREFIX,
    PROP_BUILT_AT,
    PROP_CHUNK_COUNT,
    PROP_CHUNKING,
    PROP_MODEL_ID,
    PROP_TYPES,
    PROP_VERSION,
    VersionCollection,
    chunk_fingerprint,
    collection_name,
    collections_to_drop,
    index_version,
)

if TYPE_CHECKING:  # resources import Dagster; this module only calls their methods
    from llm_assets.resources.embedder import EmbedderResource
    from llm_assets.resources.milvus import MilvusResource

Log = Callable[[str], None]


@dataclass
class KBIndexBuild:
    """What one `kb/index` run did; every field ends up in the materialization metadata."""

    version: str
    collection: str
    chunk_count: int
    embeddings_computed: int = 0
    embeddings_reused: int = 0
    rebuilt: bool = False
    vector_count: int = 0
    recall: RecallReport | None = None
    min_recall: float = 0.9
    recall_measured: bool = True  # False: no golden set, the recall gate is off (vector count alone)
    alias_moved: bool = False
    previous_collection: str | None = None
    serving_collection: str | None = None
    dropped: list[str] = field(default_factory=list)
    example_hits: list[tuple[str, list[RetrievedChunk]]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # embed, write, check: where the time went

    @property
    def vector_count_ok(self) -> bool:
        return self.vector_count == self.chunk_count

    @property
    def recall_ok(self) -> bool:
        """recall@5 at or above the threshold; True when no golden set could measure it."""
        if not self.recall_measured:
            return True
        return self.recall is not None and self.recall.recall >= self.min_recall

    @property
    def embeddings_summary(self) -> str:
        """One line for the run log: how many chunks were embedded and how many vectors were reused."""
        return f"kb/index: {self.embeddings_computed} chunks embedded, {self.embeddings_reused} reused"

    @property
    def published(self) -> bool:
        """The candidate passed its checks and is what the alias serves."""
        return self.serving_collection == self.collection


def chunking_of(chunks: Sequence[Mapping[str, Any]]) -> str:
    values = {str(c.get("chunking") or "") for c in chunks}
    if len(values) != 1:
        raise ValueError(f"kb/documents mixes chunking parameters {sorted(values)}: rematerialize it")
    return values.pop()


def version_for(chunks: Sequence[Mapping[str, Any]], model_id: str) -> str:
    return index_version(model_id, chunking_of(chunks),
                         (chunk_fingerprint(c["chunk_id"], c.get("type"), c.get("label"), c.get("actions"))
                          for c in chunks))


def _version_collections(milvus: MilvusResource) -> dict[str, dict[str, str]]:
    """Properties of every KB version collection (those carrying `kb.version`)."""
    found = {}
    for name in milvus.list_collections():
        if name.startswith(COLLECTION_PREFIX):
            props = milvus.collection_properties(name)
            if PROP_VERSION in props:
                found[name] = props
    return found


def _reusable_vectors(milvus: MilvusResource, collections: dict[str, dict[str, str]], model_id: str,
                      chunk_ids: list[str], prefer: str | None, dimension: int) -> dict[str, np.ndarray]:
    """Vectors of `chunk_ids` already stored by the same model, the serving collection first."""
    order = sorted(collections, key=lambda n: (n != prefer, -int(collections[n].get(PROP_BUILT_AT, 0))))
    found: dict[str, np.ndarray] = {}
    for name in order:
        missing = [c for c in chunk_ids if c not in found]
        if not missing:
            break
        if collections[name].get(PROP_MODEL_ID) != model_id:
            continue
        for cid, vector in milvus.fetch_vectors(name, missing).items():
            if vector.shape == (dimension,):
                found[cid] = vector
    return found


# Chunks embedded per slice; each slice is inserted on a worker thread while the next one
# is embedded, so the Milvus write hides behind the model instead of following it.
EMBED_SLICE = 256


def _write_collection(milvus: MilvusResource, embedder: EmbedderResource, build: KBIndexBuild,
                      chunks: Sequence[Mapping[str, Any]], existing: dict[str, dict[str, str]],
                      previous: str | None, log: Log) -> None:
    model_id, dimension = embedder.model_id, embedder.dimension
    ids = [c["chunk_id"] for c in chunks]
    reused = _reusable_vectors(milvus, {n: p for n, p in existing.items() if n != build.collection},
                               model_id, ids, previous, dimension)
    # By length: encode() pads each batch to its longest text, and slicing would otherwise lose
    # the length sort that one big encode() call does internally.
    todo = sorted((i for i, cid in enumerate(ids) if cid not in reused), key=lambda i: len(chunks[i]["content"]))
    log(f"kb/index {build.version}: {len(reused)} embeddings reused, {len(todo)} to compute")
    started = time.perf_counter()
    if milvus.has_collection(build.collection):
        # A collection left incomplete by an interrupted build: start it again.
        milvus.drop_collection(build.collection)
    properties = {
        PROP_VERSION: build.version, PROP_MODEL_ID: model_id, PROP_CHUNKING: chunking_of(chunks),
        PROP_BUILT_AT: str(time.time_ns()), PROP_CHUNK_COUNT: str(len(chunks)),
        PROP_TYPES: json.dumps(sorted({str(c.get("type") or "") for c in chunks}))}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-insert") as writer:
        # Creating the collection (about 1 s in Milvus Lite) overlaps the first embeddings;
        # the single writer runs it before any insert.
        pending = [writer.submit(milvus.create_chunk_collection, build.collection, dimension,
                                 expected_rows=len(chunks), properties=properties)]
        kept = [i for i, cid in enumerate(ids) if cid in reused]
        if kept:
            pending.append(writer.submit(milvus.insert_chunks, build.collection, [chunks[i] for i in kept],
                                         np.stack([reused[ids[i]] for i in kept]), flush=False))
        for start in range(0, len(todo), EMBED_SLICE):
            part = todo[start:start + EMBED_SLICE]
            vectors = embedder.encode([chunks[i]["content"] for i in part])
            pending.append(writer.submit(milvus.insert_chunks, build.collection, [chunks[i] for i in part],
                                         vectors, flush=False))
        for future in pending:
            future.result()
    milvus.flush(build.collection)
    build.seconds["embed_and_write"] = time.perf_counter() - started
    build.embeddings_computed, build.embeddings_reused, build.rebuilt = len(todo), len(reused), True


def build_kb_index(chunks: Sequence[Mapping[str, Any]], milvus: MilvusResource, embedder: EmbedderResource,
                   golden: Sequence[GoldenQuery] | None, *, min_recall: float = 0.9, keep_previous: int = 2,
                   alias: str = KB_ALIAS, examples: int = 3, log: Log | None = None) -> KBIndexBuild:
    """Build (or find) the index version of `chunks`, check it, and publish it under `alias` if it passes.

    `golden` None or empty: no recall gate, the vector count alone decides.
    """
    log = log or (lambda message: None)
    if not chunks:
        raise ValueError("kb/documents is empty: nothing to index")
    version = version_for(chunks, embedder.model_id)
    build = KBIndexBuild(version=version, collection=collection_name(version), chunk_count=len(chunks),
                         min_recall=min_recall, recall_measured=bool(golden))
    build.previous_collection = milvus.alias_target(alias)
    existing = _version_collections(milvus)

    complete = (build.collection in existing
                and existing[build.collection].get(PROP_MODEL_ID) == embedder.model_id
                and milvus.count(build.collection) == len(chunks))
    if complete:
        log(f"kb/index {version}: collection {build.collection} already complete, nothing to embed")
        build.embeddings_reused = len(chunks)
    else:
        _write_collection(milvus, embedder, build, chunks, existing, build.previous_collection, log)

    started = time.perf_counter()
    build.vector_count = milvus.count(build.collection)
    if golden:
        # recall@5 through the same search as `retrieve`, against the candidate, not the alias.
        hits = search_chunks(milvus, embedder, build.collection, [g.query for g in golden], top_k=5)
        build.recall = recall_at_k(golden, [top_documents(h, 5) for h in hits], k=5)
        build.example_hits = [(g.query, h[:3]) for g, h in zip(golden[:examples], hits)]
    else:
        log(f"kb/index {version}: no retrieval golden set, recall@5 not measured: the vector count alone decides")
    build.seconds["check"] = time.perf_counter() - started

    if build.vector_count_ok and build.recall_ok:
        if build.previous_collection != build.collection:
            milvus.point_alias(alias, build.collection)
            build.alias_moved = True
            log(f"alias {alias!r}: {build.previous_collection} -> {build.collection}")
        build.serving_collection = build.collection
    else:
        build.serving_collection = build.previous_collection
        recall = (f"recall@5 {build.recall.recall:.3f} (min {min_recall})" if build.recall
                  else "recall@5 not measured")
        log(f"kb/index {version} failed its checks (vectors {build.vector_count}/{build.chunk_count}, "
            f"{recall}): alias {alias!r} stays on {build.previous_collection}")

    protected = {build.collection} | ({build.serving_collection} if build.serving_collection else set())
    build.dropped = collections_to_drop(
        [VersionCollection(n, int(p.get(PROP_BUILT_AT, 0))) for n, p in _version_collections(milvus).items()],
        protected, keep_previous)
    for name in build.dropped:
        milvus.drop_collection(name)
        log(f"dropped old KB version collection {name}")
    return build
