"""The knowledge-base assets: `kb/documents` (chunks in Delta) and `kb/index` (Milvus, blue-green).

Thin wrappers: loading and chunking live in `corpus.py` / `chunking.py`, the index build
and alias switch in `indexing.py`; these functions wire resources and config to them and
report what happened.
"""

import posixpath
from collections import Counter

import dagster as dg
from pydantic import Field

from llm_assets.asset_keys import KB_DOCUMENTS, KB_INDEX
from llm_assets.automation import build_when_missing
from llm_assets.domain.pack import current_pack
from llm_assets.knowledge_base.checks import (
    KB_DOCUMENTS_CHECK_SPECS,
    KB_INDEX_CHECK_SPECS,
    chunk_ids_result,
    recall_result,
    vector_count_result,
)
from llm_assets.knowledge_base.chunking import ChunkingParams, chunk_documents, chunks_frame
from llm_assets.knowledge_base.corpus import EmptyCorpusError, load_corpus, load_golden_queries
from llm_assets.knowledge_base.indexing import KBIndexBuild, build_kb_index
from llm_assets.knowledge_base.retrieval import KB_ALIAS
from llm_assets.knowledge_base.versioning import version_of
from llm_assets.metadata import markdown_table
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource
from llm_assets.resources.milvus import MilvusResource

NO_GOLDEN_SET = "no retrieval golden set in the pack"


class KBDocumentsConfig(dg.Config):
    corpus_dir: str = Field(default="", description="folder or object-store prefix (s3://bucket/prefix) of KB "
                                                    "files (*.jsonl, Markdown, HTML, text, PDF); empty = the "
                                                    "domain pack's `sources.kb`")
    chunk_size: int = Field(default=200, description="chunk length, in `chunk_unit`")
    chunk_overlap: int = Field(default=40, description="overlap between consecutive chunks, in `chunk_unit`")
    chunk_unit: str = Field(default="words", description="`words` or `chars`")


class KBIndexConfig(dg.Config):
    golden_queries_path: str = Field(default="", description="retrieval golden set (JSONL, a path or URI); empty = "
                                                             "the domain pack's `sources.retrieval_queries` (none "
                                                             "there: no recall gate, the vector count decides)")
    min_recall_at_5: float = Field(default=0.9, description="the alias moves only at or above this recall@5")
    keep_previous_versions: int = Field(default=2, description="old version collections kept for rollback")


@dg.asset(key=KB_DOCUMENTS, group_name="knowledge_base", kinds={"delta"},
          automation_condition=build_when_missing(), check_specs=KB_DOCUMENTS_CHECK_SPECS)
def kb_documents(context: dg.AssetExecutionContext, config: KBDocumentsConfig,
                 delta: DeltaLakeStorage) -> dg.MaterializeResult:
    """Chunks of the domain pack's knowledge base (payments: policies, runbooks, data dictionary, resolved cases,
    escalation templates), with the heading path and document hash of each chunk.

    Reads the domain pack's KB folder (`sources.kb`: a folder or an object-store prefix; the
    config's `corpus_dir` overrides it): `*.jsonl` documents and the documents teams have as
    Markdown, HTML, text or PDF, cut along their headings (PDF: per page). Skips and reports,
    with file (and line), JSONL lines that are not JSON or lack `content` and documents that
    cannot be parsed or decoded; splits sections into overlapping chunks with content-hash
    ids, and replaces the Delta table atomically (a full snapshot). An empty corpus fails the
    run instead of publishing an empty KB.
    """
    if config.corpus_dir:
        corpus_dir, kb_source = config.corpus_dir, "run config `corpus_dir`"
    else:
        pack = current_pack()
        corpus_dir, kb_source = pack.resolve(pack.spec.sources.kb), f"domain pack {pack.version} `sources.kb`"
    params = ChunkingParams(size=config.chunk_size, overlap=config.chunk_overlap, unit=config.chunk_unit)
    try:
        corpus = load_corpus(corpus_dir)
    except EmptyCorpusError as exc:
        raise dg.Failure(description=str(exc), metadata={"corpus_dir": str(corpus_dir)}) from exc
    for problem in corpus.problems:
        if problem.line is None:
            context.log.warning(f"KB document skipped: {problem}")
        else:
            context.log.warning(f"KB line skipped: {problem}")
    if corpus.ignored:
        context.log.info(f"KB files of an unsupported type ignored: {', '.join(corpus.ignored[:20])}"
                         + (f" (+{len(corpus.ignored) - 20} more)" if len(corpus.ignored) > 20 else ""))
    chunks = chunk_documents(corpus.documents, params)
    frame = chunks_frame(chunks)
    delta.overwrite(KB_DOCUMENTS, frame)
    by_type = Counter(c.type for c in chunks)
    by_format = Counter(posixpath.splitext(name)[1].lower() for name in corpus.files)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(chunks),
        "documents": len(corpus.documents),
        "chunks": len(chunks),
        "chunking": params.fingerprint,
        "corpus_dir": str(corpus_dir),
        "kb_source": kb_source,
        "files": len(corpus.files),
        "files_by_format": markdown_table(["format", "files"], sorted(by_format.items())),
        "skipped_lines": len(corpus.skipped_lines),
        "skipped_documents": len(corpus.skipped_documents),
        "skipped_line_details": markdown_table(["file", "line", "reason"],
                                          [[p.file, "whole document" if p.line is None else p.line, p.reason]
                                           for p in corpus.problems[:50]]),
        "ignored_files": len(corpus.ignored),
        "chunks_by_type": markdown_table(["type", "chunks"], sorted(by_type.items())),
        "table_uri": delta.uri(KB_DOCUMENTS),
    }, check_results=[chunk_ids_result(frame)])


def golden_queries_location(config: KBIndexConfig) -> str | None:
    """The retrieval golden set: the config's path, else the domain pack's `sources.retrieval_queries`;
    None when the pack names none (recall cannot be measured)."""
    if config.golden_queries_path:
        return config.golden_queries_path
    pack = current_pack()
    return pack.resolve(pack.spec.sources.retrieval_queries)


def _index_metadata(build: KBIndexBuild) -> dict[str, object]:
    examples = [[query, rank, hit.doc_id, hit.type, f"{hit.score:.3f}"]
                for query, hits in build.example_hits for rank, hit in enumerate(hits, start=1)]
    return {
        "kb_index_version": version_of(build.serving_collection) or "none",
        "candidate_version": build.version,
        "candidate_published": build.published,
        "chunks": build.chunk_count,
        # Vectors computed by the model in this run vs reused from an existing version collection
        # (same chunk id, same model): an edited document re-embeds only its own chunks.
        "embeddings_computed": build.embeddings_computed,
        "embeddings_reused": build.embeddings_reused,
        "embeddings": f"{build.embeddings_computed} chunks embedded, {build.embeddings_reused} reused "
                      "(vectors of unchanged chunk ids, same model)",
        "collection_rebuilt": build.rebuilt,
        **({"recall_at_5": dg.MetadataValue.float(round(build.recall.recall, 4) if build.recall else 0.0)}
           if build.recall_measured else {}),
        "recall_gate": (f"recall@5 >= {build.min_recall} on {len(build.recall.per_query) if build.recall else 0} "
                        "golden queries" if build.recall_measured
                        else f"off: {NO_GOLDEN_SET}; published on the vector count alone"),
        "alias": KB_ALIAS,
        "alias_collection": build.serving_collection or "none",
        "alias_moved": build.alias_moved,
        "previous_alias_collection": build.previous_collection or "none",
        "dropped_collections": ", ".join(build.dropped) or "none",
        "example_hits": markdown_table(["query", "rank", "doc_id", "type", "score"], examples),
    }


@dg.asset(key=KB_INDEX, deps=[KB_DOCUMENTS], group_name="knowledge_base", kinds={"milvus"},
          automation_condition=dg.AutomationCondition.eager(),
          check_specs=KB_INDEX_CHECK_SPECS, pool="milvus")  # index builds: dagster.yaml `concurrency.pools`
def kb_index(context: dg.AssetExecutionContext, config: KBIndexConfig, delta: DeltaLakeStorage,
             milvus: MilvusResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    """Vectors of `kb/documents` in Milvus, one collection per index version, served through the alias `kb`.

    The version hashes the embedding model, the chunking and every chunk; an unchanged KB
    is the same version and nothing is embedded again, and a changed one embeds only
    its new chunks (the others' vectors are copied from the existing collections). The
    alias moves to a new version only after its vector count and golden-set recall@5
    pass (blue-green; a domain pack with no retrieval golden set publishes on the vector
    count alone, and the check and metadata say so); a failed candidate is kept and
    recorded, and retrieval stays on the previous version. Old versions beyond
    `keep_previous_versions` are dropped. The log and metadata say how many chunks were
    embedded and how many vectors were reused.
    """
    chunks = delta.read(KB_DOCUMENTS).to_dicts()
    if not chunks:
        raise dg.Failure(description="kb/documents is empty or missing: materialize it first")
    golden_path = golden_queries_location(config)
    golden = load_golden_queries(golden_path) if golden_path else None
    if golden is None:
        context.log.warning(f"kb/index: {NO_GOLDEN_SET} (`sources.retrieval_queries`): recall@5 cannot be "
                            "measured, the index is published on its vector count alone")
    build = build_kb_index(chunks, milvus, embedder, golden,
                           min_recall=config.min_recall_at_5, keep_previous=config.keep_previous_versions,
                           log=context.log.info)
    context.log.info(build.embeddings_summary)
    serving = version_of(build.serving_collection)
    return dg.MaterializeResult(
        metadata={**_index_metadata(build), "golden_queries_path": str(golden_path or f"none ({NO_GOLDEN_SET})")},
        check_results=[vector_count_result(build), recall_result(build)],
        data_version=dg.DataVersion(serving or build.version),
    )
