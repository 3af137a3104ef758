"""`kb/documents` and the blue-green `kb/index` through Dagster, on real Delta, a real Milvus
Lite file and the packaged embedding model."""

import json
import logging

import dagster as dg
import pytest

from llm_assets.knowledge_base.retrieval import current_kb_index_version, retrieve
from llm_assets.resources.milvus import MilvusResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import golden_queries
from llm_assets.asset_keys import KB_DOCUMENTS

from .conftest import check_outcomes, index_metadata, materialize_kb, small_corpus, write_jsonl

pytestmark = pytest.mark.integration

FRAUD_QUERY = "card used in several countries within minutes"


def _change_policy(kb_dir, doc_id: str, extra: str) -> None:
    rows = small_corpus()["policies"]
    for row in rows:
        if row["id"] == doc_id:
            row["content"] += " " + extra
    write_jsonl(kb_dir / "policies.jsonl", rows)


def test_kb_documents_skips_and_reports_bad_lines(resources, kb_dir, golden_path):
    with (kb_dir / "runbooks.jsonl").open("a") as f:
        f.write("{broken json\n" + json.dumps({"source": "runbooks", "id": "rb-x", "type": "runbook"}) + "\n")
    n_runbooks = len(small_corpus()["runbooks"])

    instance = dg.DagsterInstance.ephemeral()
    result = materialize_kb(resources, kb_dir, golden_path, keys=("kb/documents",), instance=instance)

    (mat,) = result.asset_materializations_for_node("kb__documents")
    assert mat.metadata["skipped_lines"].value == 2
    details = mat.metadata["skipped_line_details"].value
    assert f"| runbooks.jsonl | {n_runbooks + 1} | not JSON" in details
    assert f"| runbooks.jsonl | {n_runbooks + 2} | missing or empty `content`" in details
    logged = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any(f"runbooks.jsonl:{n_runbooks + 1}: not JSON" in m for m in logged)
    table = resources["delta"].read(KB_DOCUMENTS)
    assert table.height == sum(len(rows) for rows in small_corpus().values())
    assert "rb-x" not in table["doc_id"].to_list()
    assert table["chunk_id"].n_unique() == table.height
    resolved = table.filter(table["type"] == "resolved_case")
    assert resolved["label"].null_count() == 0 and json.loads(resolved["actions"][0])[0]["action"]
    assert check_outcomes(result) == {"kb_chunk_ids_are_unique": True}


def test_an_empty_corpus_fails_kb_documents_with_a_clear_error(resources, tmp_path, golden_path):
    empty = tmp_path / "empty_kb"
    empty.mkdir()

    result = materialize_kb(resources, empty, golden_path, keys=("kb/documents",), raise_on_error=False)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "is empty" in str(failure.step_failure_data.error.message) + str(failure.step_failure_data.user_failure_data)
    assert not resources["delta"].exists(KB_DOCUMENTS)


def test_build_then_query_then_a_rebuild_without_change_embeds_nothing(resources, kb_dir, golden_path):
    first = materialize_kb(resources, kb_dir, golden_path)
    meta = index_metadata(first)

    assert check_outcomes(first) == {"kb_chunk_ids_are_unique": True, "vector_count_matches_chunks": True,
                                     "retrieval_recall_at_5": True}
    assert meta["embeddings_computed"] == meta["chunks"] and meta["embeddings_reused"] == 0
    assert meta["alias_moved"] and meta["alias_collection"] == f"kb_{meta['candidate_version']}"
    assert meta["recall_at_5"] >= 0.9 and "| card used" in meta["example_hits"]
    milvus, embedder = resources["milvus"], resources["embedder"]
    assert current_kb_index_version(milvus) == meta["kb_index_version"] == meta["candidate_version"]
    (hits,) = retrieve(milvus, embedder, [FRAUD_QUERY])
    assert len(hits) == 5 and {"policy-fraud", "runbook-card-velocity"} <= {h.doc_id for h in hits}
    assert hits == sorted(hits, key=lambda h: -h.score)

    again = index_metadata(materialize_kb(resources, kb_dir, golden_path))

    assert again["embeddings_computed"] == 0 and again["collection_rebuilt"] is False
    assert again["kb_index_version"] == meta["kb_index_version"] and again["alias_moved"] is False


def test_changing_one_document_embeds_only_its_chunks_and_moves_the_alias_after_the_check(
        resources, kb_dir, golden_path):
    before = index_metadata(materialize_kb(resources, kb_dir, golden_path))
    _change_policy(kb_dir, "policy-pii", "Phone numbers are masked except for the last two digits.")

    result = materialize_kb(resources, kb_dir, golden_path)
    after = index_metadata(result)

    assert after["embeddings_computed"] == 1 and after["embeddings_reused"] == after["chunks"] - 1
    assert after["candidate_version"] != before["candidate_version"]
    assert check_outcomes(result)["retrieval_recall_at_5"] is True
    assert after["alias_moved"] and after["previous_alias_collection"] == before["alias_collection"]
    assert current_kb_index_version(resources["milvus"]) == after["candidate_version"]
    (hits,) = retrieve(resources["milvus"], resources["embedder"], ["are phone numbers masked in summaries"])
    assert any("last two digits" in h.content for h in hits if h.doc_id == "policy-pii")
    # The previous version is kept for rollback.
    assert resources["milvus"].has_collection(before["alias_collection"])


def test_a_failing_recall_check_leaves_the_alias_on_the_previous_version(resources, kb_dir, golden_path):
    before = index_metadata(materialize_kb(resources, kb_dir, golden_path))
    _change_policy(kb_dir, "policy-fraud", "Freeze the card before escalating.")

    result = materialize_kb(resources, kb_dir, golden_path, index={"min_recall_at_5": 1.01})
    after = index_metadata(result)

    assert result.success  # a failed check does not fail the run: the candidate is recorded
    assert check_outcomes(result) == {"kb_chunk_ids_are_unique": True, "vector_count_matches_chunks": True,
                                      "retrieval_recall_at_5": False}
    assert after["candidate_version"] != before["candidate_version"] and not after["candidate_published"]
    assert after["kb_index_version"] == before["kb_index_version"] and after["alias_moved"] is False
    assert resources["milvus"].has_collection(f"kb_{after['candidate_version']}")
    # Enrichment keeps retrieving from the previous version.
    assert current_kb_index_version(resources["milvus"]) == before["kb_index_version"]
    (hits,) = retrieve(resources["milvus"], resources["embedder"], [FRAUD_QUERY])
    fraud = [h for h in hits if h.doc_id == "policy-fraud"]
    assert fraud and "Freeze the card" not in fraud[0].content

    # The same candidate passes once the threshold is sane: nothing is embedded again, the alias moves.
    fixed = index_metadata(materialize_kb(resources, kb_dir, golden_path, keys=("kb/index",)))
    assert fixed["embeddings_computed"] == 0 and fixed["alias_moved"]
    assert current_kb_index_version(resources["milvus"]) == after["candidate_version"]


def test_golden_queries_pointing_to_missing_documents_never_publish_a_first_index(
        resources, kb_dir, golden_path, tmp_path):
    bogus = write_jsonl(tmp_path / "bogus.jsonl",
                        [{"query": q["query"], "relevant_doc_ids": ["no-such-doc"]} for q in golden_queries()])

    result = materialize_kb(resources, kb_dir, bogus)

    assert check_outcomes(result)["retrieval_recall_at_5"] is False
    assert index_metadata(result)["kb_index_version"] == "none"
    assert current_kb_index_version(resources["milvus"]) is None
    assert retrieve(resources["milvus"], resources["embedder"], [FRAUD_QUERY, "x"]) == [[], []]


def test_old_versions_beyond_the_rollback_window_are_dropped(resources, kb_dir, golden_path):
    names = []
    for i in range(3):
        _change_policy(kb_dir, "policy-general", f"Revision {i}.")
        meta = index_metadata(materialize_kb(resources, kb_dir, golden_path, index={"keep_previous_versions": 1}))
        names.append(meta["alias_collection"])

    kept = {c for c in resources["milvus"].list_collections() if c.startswith("kb_")}
    assert kept == {names[2], names[1]}
    assert meta["dropped_collections"] == names[0]


def test_ivf_flat_index_serves_the_same_contract(tmp_path, kb_dir, golden_path, resources):
    ivf = {**resources, "milvus": MilvusResource(uri=str(tmp_path / "ivf.db"), index_type="IVF_FLAT")}

    result = materialize_kb(ivf, kb_dir, golden_path)

    assert all(check_outcomes(result).values())
    (hits,) = retrieve(ivf["milvus"], ivf["embedder"], [FRAUD_QUERY], top_k=3)
    assert len(hits) == 3 and hits[0].doc_id in {"policy-fraud", "runbook-card-velocity"}


def test_kb_assets_are_declared_with_their_contract():
    from llm_assets.knowledge_base.definitions import defs

    specs = {s.key: s for a in defs.assets for s in a.specs}
    documents, index = specs[dg.AssetKey(["kb", "documents"])], specs[dg.AssetKey(["kb", "index"])]
    assert documents.kinds == {"delta"} and index.kinds == {"milvus"}
    assert documents.group_name == index.group_name == "knowledge_base"
    assert {d.asset_key for d in index.deps} == {documents.key}
    assert documents.description and index.description
