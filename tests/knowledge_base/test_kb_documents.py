"""KB documents teams have (Markdown, HTML, PDF, text) next to JSONL: real parsers, heading
sections, document hashes, fsspec prefixes, broken files; `kb/documents` from the domain pack."""

import hashlib
import json
import uuid

import dagster as dg
import fsspec
import pytest

from llm_assets.asset_keys import KB_DOCUMENTS
from llm_assets.domain.pack import PACKS_DIR
from llm_assets.knowledge_base.assets import golden_queries_location, kb_documents
from llm_assets.knowledge_base.chunking import ChunkingParams, chunk_documents, chunks_frame, split_text
from llm_assets.knowledge_base.corpus import EmptyCorpusError, load_corpus
from llm_assets.knowledge_base.parsers import parse_document
from llm_assets.resources.delta import DeltaLakeStorage

from .documents import CHARGEBACKS_PDF, DOCUMENTS, PDF_SENTENCE, minimal_pdf, write_documents, write_pack

pytestmark = pytest.mark.integration

PAYMENTS_KB = PACKS_DIR / "payments_ops" / "kb"


def _chunks(location, params: ChunkingParams = ChunkingParams()):
    corpus = load_corpus(location)
    return corpus, chunk_documents(corpus.documents, params)


def test_markdown_html_and_pdf_are_cut_along_their_headings_and_hashed(tmp_path):
    corpus, chunks = _chunks(write_documents(tmp_path / "kb"))

    assert corpus.files == ["card_velocity.md", "guides/chargebacks.pdf", "policies/refunds.html"]
    assert corpus.problems == [] and corpus.ignored == []
    by_doc = {}
    for chunk in chunks:
        by_doc.setdefault(chunk.doc_id, []).append(chunk)
    # Markdown: the heading path, front matter dropped, markup rendered as text.
    assert [c.heading for c in by_doc["card_velocity.md"]] == [
        "Card velocity runbook", "Card velocity runbook > Detection", "Card velocity runbook > Escalation",
        "Card velocity runbook > Escalation > Out of hours", "Card velocity runbook > Closing"]
    assert not any("owner" in c.content or "#" in c.content for c in by_doc["card_velocity.md"])
    # HTML: h1/h2, text before the first heading under the <title>, no script or style text.
    html = by_doc["policies/refunds.html"]
    assert [(c.heading, c.content) for c in html] == [
        ("Refund policy", "Applies to every merchant without exception."),
        ("Refund policy", "Refunds go back to the original payment method."),
        ("Refund policy > Partial refunds", "Allowed once per order.\nNever above the captured amount."),
        ("Refund policy > Currency", "A refund is paid in the currency of the capture.")]
    # PDF: one section per page, the text pypdf extracts.
    pdf = by_doc["guides/chargebacks.pdf"]
    assert [c.heading for c in pdf] == ["page 1", "page 2"]
    assert PDF_SENTENCE in pdf[0].content and "delivery receipt" in pdf[1].content
    # Source and id are the path under the KB folder; type its first folder ("document" at the top).
    for name, data in DOCUMENTS.items():
        assert {(c.source, c.type, c.label, c.actions, c.document_sha256) for c in by_doc[name]} == {
            (name, name.split("/")[0] if "/" in name else "document", None, None, hashlib.sha256(data).hexdigest())}
    frame = chunks_frame(chunks)
    assert frame.columns[-2:] == ["heading", "document_sha256"] and frame["chunk_id"].n_unique() == frame.height


def test_the_same_sentence_under_two_headings_is_two_chunks_and_long_sections_are_windowed(tmp_path):
    _, chunks = _chunks(write_documents(tmp_path / "kb"))
    on_call = [c for c in chunks if c.content == "Call the on-call."]
    assert [c.heading for c in on_call] == ["Card velocity runbook > Escalation > Out of hours",
                                           "Card velocity runbook > Closing"]
    assert on_call[0].chunk_id != on_call[1].chunk_id

    long_section = " ".join(f"w{i}" for i in range(25))
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "notes.md").write_text(f"# A\n\n{long_section}\n\n# B\n\nshort tail\n")
    _, windows = _chunks(tmp_path / "long", ChunkingParams(size=10, overlap=3))
    assert [c.heading for c in windows] == ["A", "A", "A", "A", "B"]
    assert [c.content for c in windows[:4]] == split_text(long_section, ChunkingParams(size=10, overlap=3))
    assert windows[-1].content == "short tail"  # never glued to the previous section's words


def test_plain_text_is_one_section_and_unknown_files_are_ignored(tmp_path):
    root = tmp_path / "kb"
    root.mkdir()
    (root / "catalogue.txt").write_text("SSO: single sign-on.\n\n\nVPN:   remote access.\n")
    (root / "slides.pptx").write_bytes(b"PK\x03\x04")
    corpus, chunks = _chunks(root)
    assert [(c.heading, c.content, c.type) for c in chunks] == [(None, "SSO: single sign-on.\nVPN: remote access.",
                                                                 "document")]
    assert corpus.ignored == ["slides.pptx"] and corpus.files == ["catalogue.txt"]


def test_broken_documents_are_skipped_and_reported_with_their_file(tmp_path):
    root = write_documents(tmp_path / "kb")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a PDF\n")
    (root / "truncated.pdf").write_bytes(CHARGEBACKS_PDF[:300])
    (root / "scanned.pdf").write_bytes(minimal_pdf([[]]))
    (root / "latin1.md").write_bytes("# Caf\xe9\n\nna\xefve".encode("latin-1"))
    (root / "utf16.txt").write_text("hello", encoding="utf-16")
    (root / "empty.md").write_text("# Only a heading\n")
    (root / "cases.jsonl").write_text(json.dumps({"id": "c1", "content": "A resolved case."}) + "\n{oops\n")

    corpus, chunks = _chunks(root)

    problems = {p.file: (p.line, p.reason) for p in corpus.problems}
    assert set(problems) == {"broken.pdf", "truncated.pdf", "scanned.pdf", "latin1.md", "utf16.txt", "empty.md",
                             "cases.jsonl"}
    assert problems["broken.pdf"][0] is None and problems["broken.pdf"][1].startswith("cannot parse the PDF")
    assert problems["truncated.pdf"][1].startswith("cannot parse the PDF")
    assert "no extractable text" in problems["scanned.pdf"][1]
    assert problems["latin1.md"][1] == "not UTF-8 text: invalid continuation byte at byte 5"
    assert "NUL bytes" in problems["utf16.txt"][1] and problems["empty.md"][1] == "no text in the document"
    assert problems["cases.jsonl"] == (2, problems["cases.jsonl"][1]) and "not JSON" in problems["cases.jsonl"][1]
    assert [p.file for p in corpus.skipped_lines] == ["cases.jsonl"] and len(corpus.skipped_documents) == 6
    assert {c.doc_id for c in chunks} == {*DOCUMENTS, "c1"}  # everything valid is kept

    only_broken = tmp_path / "only_broken"
    only_broken.mkdir()
    (only_broken / "broken.pdf").write_bytes(b"%PDF-1.4\nnope\n")
    with pytest.raises(EmptyCorpusError, match=r"1 KB file\(s\), 0 valid documents.*broken.pdf: cannot parse"):
        load_corpus(only_broken)


def _old_chunk_ids(location) -> list[str]:
    """The chunk ids as they were derived before headings existed: sha256(source, id, text[, n])."""
    ids = []
    for doc in load_corpus(location).documents:
        seen: dict[str, int] = {}
        for piece in split_text(doc.content, ChunkingParams()):
            n = seen.get(piece, 0)
            seen[piece] = n + 1
            key = f"{doc.source}\x1f{doc.doc_id}\x1f{piece}" + (f"\x1f{n}" if n else "")
            ids.append(hashlib.sha256(key.encode()).hexdigest()[:32])
    return ids


def test_jsonl_documents_keep_their_chunk_ids_and_hash_their_canonical_json(tmp_path):
    _, chunks = _chunks(PAYMENTS_KB)
    assert [c.chunk_id for c in chunks] == _old_chunk_ids(PAYMENTS_KB)  # the payments pack's KB is unchanged
    assert all(c.heading is None for c in chunks)

    row = {"source": "policies", "id": "p1", "type": "policy", "content": "Approve corrections.", "label": "x"}
    (tmp_path / "policies.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "reordered.jsonl").write_text(json.dumps(dict(reversed(row.items())) | {"source": "other"}) + "\n")
    (chunk, other), expected = _chunks(tmp_path)[1], json.dumps(row, sort_keys=True, separators=(",", ":"))
    assert chunk.document_sha256 == hashlib.sha256(expected.encode()).hexdigest()
    assert other.document_sha256 != chunk.document_sha256  # another source is another document


def test_an_object_store_prefix_reads_like_a_folder(tmp_path):
    local = write_documents(tmp_path / "kb")
    (local / "cases.jsonl").write_text(json.dumps({"id": "c1", "content": "A resolved case."}) + "\n")
    fs = fsspec.filesystem("memory")
    prefix = f"/kb-{uuid.uuid4().hex}/team-docs"
    try:
        for path in local.rglob("*"):
            if path.is_file():
                fs.pipe(f"{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())
        fs.pipe(f"/{prefix.split('/')[1]}/team-docs-other/ignored.md", b"# not under the prefix\n\ntext")

        remote_corpus, remote = _chunks(f"memory://{prefix}")
        local_corpus, here = _chunks(local)
        assert remote == here and remote_corpus.files == local_corpus.files
        assert _chunks(f"memory://{prefix}/")[1] == here
    finally:
        fs.rm(f"/{prefix.split('/')[1]}", recursive=True)
    with pytest.raises(EmptyCorpusError, match="no KB file"):
        load_corpus(f"memory://{prefix}")


def test_parsers_never_fail_a_deeply_nested_html_page():
    html = "<div>" * 5000 + "<h2>Deep</h2><p>still read</p>" + "</div>" * 5000
    assert [(s.heading, s.text) for s in parse_document("deep.html", html.encode())] == [("Deep", "still read")]


def _materialize_documents(delta: DeltaLakeStorage, config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize([kb_documents], resources={"delta": delta},
                          run_config={"ops": {"kb__documents": {"config": config or {}}}})


def test_kb_documents_reads_the_domain_packs_kb_folder_by_default(tmp_path, monkeypatch):
    delta = DeltaLakeStorage(root=str(tmp_path / "delta"))
    kb = write_documents(tmp_path / "team_kb")
    (kb / "notes.docx").write_bytes(b"PK")
    (kb / "broken.pdf").write_bytes(b"%PDF-1.4\nnope\n")
    monkeypatch.setenv("LLM_ASSETS_DOMAIN", str(write_pack(tmp_path / "pack", kb=str(kb))))

    result = _materialize_documents(delta)

    (mat,) = result.asset_materializations_for_node("kb__documents")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert meta["corpus_dir"] == str(kb) and meta["kb_source"].startswith("domain pack payments_ops@")
    assert meta["documents"] == 3 and meta["skipped_documents"] == 1 and meta["skipped_lines"] == 0
    assert meta["ignored_files"] == 1 and "| broken.pdf | whole document | cannot parse the PDF" in \
        meta["skipped_line_details"]
    table = delta.read(KB_DOCUMENTS)
    assert table.columns[-2:] == ["heading", "document_sha256"]
    pdf = table.filter(table["doc_id"] == "guides/chargebacks.pdf")
    assert pdf["heading"].to_list() == ["page 1", "page 2"] and PDF_SENTENCE in pdf["content"][0]
    assert set(pdf["document_sha256"]) == {hashlib.sha256(CHARGEBACKS_PDF).hexdigest()}
    assert "Card velocity runbook > Escalation" in table["heading"].to_list()

    # Without LLM_ASSETS_DOMAIN: the payments pack's own KB, exactly its JSONL documents.
    monkeypatch.delenv("LLM_ASSETS_DOMAIN")
    _materialize_documents(delta)
    payments = delta.read(KB_DOCUMENTS)
    assert payments["chunk_id"].to_list() == _old_chunk_ids(PAYMENTS_KB)
    assert payments["heading"].null_count() == payments.height and payments["document_sha256"].null_count() == 0
    # The run config still overrides the pack.
    override = _materialize_documents(delta, {"corpus_dir": str(kb)})
    (mat,) = override.asset_materializations_for_node("kb__documents")
    assert mat.metadata["kb_source"].value == "run config `corpus_dir`"


def test_the_golden_set_comes_from_the_pack_unless_configured(tmp_path, monkeypatch):
    from llm_assets.knowledge_base.assets import KBIndexConfig

    assert golden_queries_location(KBIndexConfig()) == str(PACKS_DIR / "payments_ops" / "golden" /
                                                            "retrieval_queries.jsonl")
    assert golden_queries_location(KBIndexConfig(golden_queries_path="s3://b/q.jsonl")) == "s3://b/q.jsonl"
    monkeypatch.setenv("LLM_ASSETS_DOMAIN", str(write_pack(tmp_path / "pack", kb="kb")))
    assert golden_queries_location(KBIndexConfig()) is None
