"""`kb/index` over Markdown, HTML and PDF documents on a real Milvus Lite file and the packaged
embedding model: an edited document re-embeds only its chunks, a removed one leaves the new
version, a PDF's text is retrievable, and a pack without a retrieval golden set publishes on
the vector count alone (and says so)."""

import logging

import dagster as dg
import pytest

from llm_assets.asset_keys import KB_DOCUMENTS
from llm_assets.knowledge_base.definitions import defs as kb_defs
from llm_assets.knowledge_base.retrieval import current_kb_index_version, retrieve, search_chunks

from .conftest import check_outcomes, index_metadata
from .documents import PDF_QUERY, PDF_SENTENCE, RUNBOOK_MD, write_documents, write_pack

pytestmark = pytest.mark.integration


def _materialize(resources: dict, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """kb/documents then kb/index with no run config: everything comes from the domain pack."""
    return dg.materialize(list(kb_defs.assets), resources=resources, instance=instance,
                          selection=[KB_DOCUMENTS, dg.AssetKey(["kb", "index"])])


def _chunk_ids(resources: dict, doc_id: str | None = None) -> set[str]:
    table = resources["delta"].read(KB_DOCUMENTS)
    if doc_id is not None:
        table = table.filter(table["doc_id"] == doc_id)
    return set(table["chunk_id"])


def _logged(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id) if e.level >= logging.INFO]


def test_document_edits_reembed_only_their_chunks_and_removed_documents_leave_the_index(
        resources, tmp_path, monkeypatch):
    kb = write_documents(tmp_path / "team_kb")
    monkeypatch.setenv("LLM_ASSETS_DOMAIN", str(write_pack(tmp_path / "pack", kb=str(kb))))
    milvus, embedder = resources["milvus"], resources["embedder"]
    instance = dg.DagsterInstance.ephemeral()

    # 1. First build: every chunk embedded; no golden set in the pack, so the vector count decides.
    first = _materialize(resources, instance)
    meta = index_metadata(first)
    chunks = len(_chunk_ids(resources))
    assert meta["chunks"] == chunks and meta["embeddings_computed"] == chunks and meta["embeddings_reused"] == 0
    assert check_outcomes(first) == {"kb_chunk_ids_are_unique": True, "vector_count_matches_chunks": True,
                                     "retrieval_recall_at_5": True}
    (recall_check,) = [e for e in first.get_asset_check_evaluations() if e.check_name == "retrieval_recall_at_5"]
    assert recall_check.metadata["note"].value == \
        "no retrieval golden set in the pack: published on the vector count alone"
    assert "recall_at_5" not in meta and meta["recall_gate"].startswith("off: no retrieval golden set in the pack")
    assert meta["alias_moved"] and current_kb_index_version(milvus) == meta["candidate_version"]
    assert f"kb/index: {chunks} chunks embedded, 0 reused" in _logged(instance, first)

    # The PDF's text is retrievable: a question about it finds its page.
    (hits,) = retrieve(milvus, embedder, [PDF_QUERY])
    assert hits[0].doc_id == "guides/chargebacks.pdf" and PDF_SENTENCE in hits[0].content

    # 2. Edit one section of the Markdown runbook: only that section's chunk is embedded again.
    runbook_before = _chunk_ids(resources, "card_velocity.md")
    (kb / "card_velocity.md").write_text(RUNBOOK_MD.replace(
        "Freeze the card and page the fraud on-call.",
        "Freeze the card, block the device fingerprint and page the fraud on-call."))
    edited = _materialize(resources, instance)
    after = index_metadata(edited)
    changed = _chunk_ids(resources, "card_velocity.md") - runbook_before
    assert len(changed) == 1
    assert after["embeddings_computed"] == 1 and after["embeddings_reused"] == chunks - 1
    assert after["embeddings"] == f"1 chunks embedded, {chunks - 1} reused (vectors of unchanged chunk ids, same model)"
    assert f"kb/index: 1 chunks embedded, {chunks - 1} reused" in _logged(instance, edited)
    assert after["candidate_version"] != meta["candidate_version"] and after["alias_moved"]
    (hits,) = retrieve(milvus, embedder, ["block the device fingerprint of a card used in many countries"])
    assert any("device fingerprint" in h.content for h in hits if h.doc_id == "card_velocity.md")

    # 3. Remove the HTML policy: the next version has none of its chunks, and nothing is embedded.
    html_chunks = _chunk_ids(resources, "policies/refunds.html")
    (kb / "policies" / "refunds.html").unlink()
    removed = index_metadata(_materialize(resources, instance))
    collection = removed["alias_collection"]
    assert removed["chunks"] == chunks - len(html_chunks) == milvus.count(collection)
    assert removed["embeddings_computed"] == 0 and removed["embeddings_reused"] == removed["chunks"]
    assert milvus.fetch_vectors(collection, html_chunks) == {}
    assert milvus.fetch_vectors(after["alias_collection"], html_chunks).keys() == html_chunks  # rollback kept it
    (hits,) = search_chunks(milvus, embedder, "kb", ["refund paid in the currency of the capture"], top_k=10,
                            max_per_type=None)
    assert hits and all(h.doc_id != "policies/refunds.html" for h in hits)
