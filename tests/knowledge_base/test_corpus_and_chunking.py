"""The pure KB modules: corpus validation, chunking, versioning, rollback window."""

import json

import pytest

from llm_assets.knowledge_base.chunking import ChunkingParams, chunk_documents, chunk_id, chunks_frame, split_text
from llm_assets.knowledge_base.corpus import EmptyCorpusError, GoldenQuery, KBDocument, load_corpus
from llm_assets.knowledge_base.retrieval import recall_at_k
from llm_assets.knowledge_base.versioning import VersionCollection, collections_to_drop, index_version

pytestmark = pytest.mark.unit


def test_bad_lines_are_reported_with_file_and_line_and_the_rest_is_kept(tmp_path):
    (tmp_path / "policies.jsonl").write_text("\n".join([
        json.dumps({"source": "policies", "id": "p1", "type": "policy", "content": "Approve corrections."}),
        "{not json",
        json.dumps({"source": "policies", "id": "p2", "type": "policy"}),
        "",
        json.dumps({"source": "policies", "id": "p3", "type": "policy", "label": "other", "content": "Be kind.",
                    "actions": [{"action": "notify"}]}),
    ]) + "\n")

    corpus = load_corpus(tmp_path)

    assert [d.doc_id for d in corpus.documents] == ["p1", "p3"]
    assert [(p.file, p.line) for p in corpus.problems] == [("policies.jsonl", 2), ("policies.jsonl", 3)]
    assert "not JSON" in corpus.problems[0].reason and "content" in corpus.problems[1].reason
    assert json.loads(corpus.documents[1].actions) == [{"action": "notify"}] and corpus.documents[1].label == "other"


def test_an_empty_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(EmptyCorpusError, match="empty"):
        load_corpus(tmp_path)
    (tmp_path / "runbooks.jsonl").write_text("oops\n")
    with pytest.raises(EmptyCorpusError, match="runbooks.jsonl"):
        load_corpus(tmp_path)


def test_long_documents_split_into_overlapping_windows():
    text = " ".join(f"w{i}" for i in range(25))
    chunks = split_text(text, ChunkingParams(size=10, overlap=3, unit="words"))
    assert chunks[0].split() == [f"w{i}" for i in range(10)]
    assert chunks[1].split()[:3] == ["w7", "w8", "w9"]
    assert chunks[-1].split()[-1] == "w24"
    assert split_text("short text", ChunkingParams(size=10, overlap=3)) == ["short text"]
    by_chars = split_text("abcdefghij" * 3, ChunkingParams(size=12, overlap=2, unit="chars"))
    assert all(len(c) <= 12 for c in by_chars) and "".join(c[2:] if i else c for i, c in enumerate(by_chars)) \
        == "abcdefghij" * 3
    with pytest.raises(ValueError):
        ChunkingParams(size=10, overlap=10)


def test_chunk_ids_are_stable_content_hashes():
    doc = KBDocument("runbooks", "r1", "runbook", "one two three four five six")
    params = ChunkingParams(size=4, overlap=1)
    first, again = chunk_documents([doc], params), chunk_documents([doc], params)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert len({c.chunk_id for c in first}) == len(first) == 2
    assert chunk_id("runbooks", "r1", "x") != chunk_id("runbooks", "r1", "y") != chunk_id("runbooks", "r2", "y")
    frame = chunks_frame(first)
    assert frame.columns[:7] == ["source", "doc_id", "chunk_id", "type", "content", "label", "actions"]
    assert frame["label"].null_count() == 2


def test_index_version_depends_on_model_chunking_and_chunks_only():
    fps = ["a\x1fpolicy\x1f\x1f", "b\x1frunbook\x1f\x1f"]
    v = index_version("m@1", "words:200:40", fps)
    assert v == index_version("m@1", "words:200:40", list(reversed(fps)))
    assert len({v, index_version("m@2", "words:200:40", fps), index_version("m@1", "words:100:20", fps),
                index_version("m@1", "words:200:40", fps[:1])}) == 4


def test_rollback_window_keeps_the_newest_old_versions_and_never_the_protected_ones():
    collections = [VersionCollection(f"kb_{i}", i) for i in range(5)]
    assert collections_to_drop(collections, {"kb_4", "kb_0"}, keep_previous=2) == ["kb_1"]
    assert collections_to_drop(collections, {"kb_4"}, keep_previous=0) == ["kb_3", "kb_2", "kb_1", "kb_0"]


def test_recall_at_k_counts_relevant_documents_in_the_top_k():
    golden = [GoldenQuery("q1", ("a", "b")), GoldenQuery("q2", ("c",))]
    report = recall_at_k(golden, [["a", "x", "y", "z", "w", "b"], ["c"]], k=5)
    assert report.recall == pytest.approx(0.75)
    assert [q.query for q in report.misses] == ["q1"]
