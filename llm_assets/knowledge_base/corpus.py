"""Loading and validating the KB corpus and the golden retrieval queries; no Dagster.

The corpus is a folder (or an object-store prefix such as `s3://bucket/kb`, listed and read
through fsspec) of:

- `*.jsonl`: one document per line, a JSON object with `source`, `id`, `type`, `content` and,
  when present, `label` and `actions` (resolved cases). A line that is not JSON, not an object,
  or lacks `id` or a non-empty `content` is reported with its file and line and skipped.
- documents teams already have: Markdown, HTML, plain text and PDF (`parsers.py`), one document
  per file, cut into heading-delimited sections. Its `source` and `doc_id` are its path relative
  to the KB folder (stable across runs), its `type` the first folder of that path (`document`
  for a file at the top), no label or actions. A document that cannot be parsed or decoded is
  reported with its file and skipped.

Files of any other type are listed as ignored. A corpus with no valid document is an error
(`EmptyCorpusError`). Each document carries the sha256 of what it was read from: the file's
bytes, or the canonical JSON of its line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from llm_assets.domain.golden import json_object_line
from llm_assets.knowledge_base.parsers import PARSERS, Section, parse_document

JSONL_SUFFIX = ".jsonl"
SUPPORTED_SUFFIXES = (JSONL_SUFFIX, *PARSERS)
DEFAULT_DOCUMENT_TYPE = "document"


class EmptyCorpusError(ValueError):
    """The KB directory holds no valid document: indexing it would wipe retrieval."""


@dataclass(frozen=True)
class KBDocument:
    source: str
    doc_id: str
    type: str
    content: str
    label: str | None = None
    actions: str | None = None  # JSON list, as written in the corpus
    # Heading-delimited parts of a file document (Markdown, HTML, PDF pages, text); () for a JSONL
    # document, whose `content` is one section without a heading.
    sections: tuple[Section, ...] = ()
    sha256: str | None = None  # of the file's bytes, or of the JSONL line's canonical JSON


@dataclass(frozen=True)
class CorpusProblem:
    file: str
    line: int | None  # None: the whole document (a file that cannot be parsed or decoded)
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line is not None else f"{self.file}: {self.reason}"


@dataclass
class Corpus:
    documents: list[KBDocument] = field(default_factory=list)
    problems: list[CorpusProblem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every KB file read (relative names)
    ignored: list[str] = field(default_factory=list)  # files of an unsupported type

    @property
    def skipped_lines(self) -> list[CorpusProblem]:
        return [p for p in self.problems if p.line is not None]

    @property
    def skipped_documents(self) -> list[CorpusProblem]:
        return [p for p in self.problems if p.line is None]


@dataclass(frozen=True)
class GoldenQuery:
    query: str
    relevant_doc_ids: tuple[str, ...]


def parse_kb_line(text: str, default_source: str) -> KBDocument:
    """One JSONL line as a document; raises ValueError with the reason it is unusable."""
    row = json_object_line(text)
    content = row.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ValueError("missing or empty `content`")
    if row.get("id") in (None, ""):
        raise ValueError("missing `id`")
    source = str(row.get("source") or default_source)
    actions = row.get("actions")
    label = row.get("label")
    canonical = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return KBDocument(
        source=source,
        doc_id=str(row["id"]),
        type=str(row.get("type") or source),
        content=content.strip(),
        label=str(label) if label not in (None, "") else None,
        actions=(actions if isinstance(actions, str) else json.dumps(actions, sort_keys=True))
        if actions is not None else None,
        sha256=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
    )


def parse_file_document(name: str, data: bytes) -> KBDocument:
    """One Markdown / HTML / text / PDF file (`name` relative to the KB folder) as a document;
    ValueError with the reason when it cannot be used."""
    sections = tuple(parse_document(name, data))
    folder = name.split("/", 1)[0] if "/" in name else ""
    return KBDocument(source=name, doc_id=name, type=folder or DEFAULT_DOCUMENT_TYPE,
                      content="\n\n".join(s.text for s in sections), sections=sections,
                      sha256=hashlib.sha256(data).hexdigest())


def kb_filesystem(location: Path | str, storage_options: Mapping[str, Any] | None = None):
    """(fsspec filesystem, root path) of a KB folder or object-store prefix."""
    from fsspec.core import url_to_fs
    from fsspec.implementations.local import LocalFileSystem

    fs, root = url_to_fs(str(location), **dict(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        root = os.path.normpath(root)
    return fs, root.rstrip("/") or "/"


def _list_files(fs, root: str) -> list[tuple[str, str]]:
    """(relative name, full path) of every file under `root`, sorted by path parts."""
    try:
        if not fs.isdir(root):
            return []
        found = fs.find(root)
    except FileNotFoundError:
        return []
    prefix = root if root.endswith("/") else root + "/"
    # (an object store's zero-byte "folder/" marker objects are not files)
    files = [(path[len(prefix):], path) for path in found if path.startswith(prefix) and not path.endswith("/")]
    return sorted(files, key=lambda f: f[0].split("/"))


def _read_jsonl(corpus: Corpus, seen: set[tuple[str, str]], name: str, data: bytes) -> None:
    default_source = posixpath.splitext(posixpath.basename(name))[0]
    # Decoded as a text file opened with errors="replace" would be (universal newlines).
    with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                doc = parse_kb_line(text, default_source=default_source)
            except ValueError as exc:
                corpus.problems.append(CorpusProblem(name, number, str(exc)))
                continue
            _accept(corpus, seen, doc, name, number)


def _accept(corpus: Corpus, seen: set[tuple[str, str]], doc: KBDocument, name: str, number: int | None) -> None:
    """Keep `doc`, unless its id was seen before in its source: then it is a problem (the first wins)."""
    if (doc.source, doc.doc_id) in seen:
        corpus.problems.append(CorpusProblem(name, number, f"duplicate id {doc.doc_id!r} in {doc.source}"))
        return
    seen.add((doc.source, doc.doc_id))
    corpus.documents.append(doc)


def load_corpus(corpus_dir: Path | str, storage_options: Mapping[str, Any] | None = None) -> Corpus:
    """Every KB file under `corpus_dir` (a folder, or a `s3://`, `gs://`, `memory://`... prefix), sorted;
    valid documents kept, problems listed, unsupported files listed as ignored.

    A document id seen twice in one source is a problem too (the first one wins), so
    chunk ids stay unique and a copy-paste error is visible.
    """
    fs, root = kb_filesystem(corpus_dir, storage_options)
    corpus = Corpus()
    seen: set[tuple[str, str]] = set()
    for name, path in _list_files(fs, root):
        suffix = posixpath.splitext(name)[1].lower()
        if suffix not in SUPPORTED_SUFFIXES:
            corpus.ignored.append(name)
            continue
        corpus.files.append(name)
        try:
            data = fs.cat_file(path)
        except OSError as exc:
            corpus.problems.append(CorpusProblem(name, None, f"cannot read it: {exc.strerror or exc}"))
            continue
        if suffix == JSONL_SUFFIX:
            _read_jsonl(corpus, seen, name, data)
            continue
        try:
            doc = parse_file_document(name, data)
        except ValueError as exc:
            corpus.problems.append(CorpusProblem(name, None, str(exc)))
            continue
        _accept(corpus, seen, doc, name, None)
    if not corpus.documents:
        where = (f"{len(corpus.files)} KB file(s)" if corpus.files
                 else f"no KB file ({', '.join('*' + s for s in SUPPORTED_SUFFIXES)})")
        raise EmptyCorpusError(
            f"the KB corpus at {corpus_dir} is empty: {where}, 0 valid documents"
            + (f", {len(corpus.problems)} problem(s), first: {corpus.problems[0]}" if corpus.problems else "")
            + "; refusing to publish an empty knowledge base"
        )
    return corpus


def load_golden_queries(path: Path | str) -> list[GoldenQuery]:
    """The retrieval golden set: one `{"query", "relevant_doc_ids"}` object per line (a path or an fsspec URI)."""
    import fsspec

    queries = []
    with fsspec.open(str(path), "rt", encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            row = json.loads(text)
            ids = tuple(str(i) for i in row.get("relevant_doc_ids") or ())
            if not row.get("query") or not ids:
                raise ValueError(f"{path}:{number}: a golden query needs `query` and `relevant_doc_ids`")
            queries.append(GoldenQuery(str(row["query"]), ids))
    if not queries:
        raise ValueError(f"the golden query set {path} is empty")
    return queries
