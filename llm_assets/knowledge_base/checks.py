"""Quality gates of the knowledge base.

Both assets declare their checks as `check_specs` and return the results with their
materialization (the project's one check style): `kb/index`'s vector count and the golden-set
recall@5 of the NEW collection decide whether the alias `kb` moves; `kb/documents` checks that
the chunk ids of the snapshot it wrote are unique (they are the Milvus primary key).
"""

import dagster as dg
import polars as pl

from llm_assets.asset_keys import KB_DOCUMENTS, KB_INDEX
from llm_assets.knowledge_base.indexing import KBIndexBuild


KB_INDEX_CHECK_SPECS = [
    dg.AssetCheckSpec("vector_count_matches_chunks", asset=KB_INDEX,
                      description="The candidate collection holds exactly one vector per kb/documents chunk."),
    dg.AssetCheckSpec("retrieval_recall_at_5", asset=KB_INDEX,
                      description="recall@5 of the candidate collection on the golden retrieval queries is at "
                                  "least the threshold (0.9 by default); the alias `kb` moves only if it passes. "
                                  "A domain pack without a retrieval golden set cannot measure it: the check "
                                  "passes with a note and the vector count alone decides."),
]


def _recall_misses_md(build: KBIndexBuild, limit: int = 10) -> str:
    rows = ["| query | recall | relevant | retrieved |", "|---|---|---|---|"]
    for q in (build.recall.misses if build.recall else [])[:limit]:
        rows.append(f"| {q.query} | {q.recall:.2f} | {', '.join(q.relevant)} | {', '.join(q.retrieved)} |")
    return "\n".join(rows) if len(rows) > 2 else "every golden query found all its relevant documents"


def vector_count_result(build: KBIndexBuild) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="vector_count_matches_chunks", asset_key=KB_INDEX, passed=build.vector_count_ok,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"vectors": build.vector_count, "chunks": build.chunk_count, "collection": build.collection},
    )


def recall_result(build: KBIndexBuild) -> dg.AssetCheckResult:
    if not build.recall_measured:
        return dg.AssetCheckResult(
            check_name="retrieval_recall_at_5", asset_key=KB_INDEX, passed=True,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"recall_at_5": "not measured",
                      "note": "no retrieval golden set in the pack: published on the vector count alone",
                      "candidate_version": build.version},
        )
    recall = build.recall.recall if build.recall else 0.0
    return dg.AssetCheckResult(
        check_name="retrieval_recall_at_5", asset_key=KB_INDEX, passed=build.recall_ok,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "recall_at_5": dg.MetadataValue.float(round(recall, 4)),
            "threshold": dg.MetadataValue.float(build.min_recall),
            "golden_queries": len(build.recall.per_query) if build.recall else 0,
            "candidate_version": build.version,
            "misses": dg.MetadataValue.md(_recall_misses_md(build)),
        },
    )


KB_DOCUMENTS_CHECK_SPECS = [
    dg.AssetCheckSpec("kb_chunk_ids_are_unique", asset=KB_DOCUMENTS,
                      description="Every chunk id in kb/documents is unique (Milvus primary key)."),
]


def chunk_ids_result(chunks: pl.DataFrame) -> dg.AssetCheckResult:
    """`kb_chunk_ids_are_unique` on the snapshot `kb/documents` wrote."""
    duplicates = int(chunks.height - chunks["chunk_id"].n_unique()) if chunks.height else 0
    return dg.AssetCheckResult(check_name="kb_chunk_ids_are_unique", passed=duplicates == 0,
                               metadata={"chunks": chunks.height, "duplicate_chunk_ids": duplicates})
