"""Loading and validating the KB corpus (JSONL) and the golden retrieval queries; no Dagster.

A KB line is a JSON object with `source`, `id`, `type`, `content` and, when present,
`label` and `actions` (resolved cases). A line that is not JSON, not an object, or lacks
`id` or a non-empty `content` is reported with its file and line and skipped; a corpus
with no valid document is an error (`EmptyCorpusError`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


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


@dataclass(frozen=True)
class CorpusProblem:
    file: str
    line: int
    reason: str


@dataclass
class Corpus:
    documents: list[KBDocument] = field(default_factory=list)
    problems: list[CorpusProblem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GoldenQuery:
    query: str
    relevant_doc_ids: tuple[str, ...]


def parse_kb_line(text: str, default_source: str) -> KBDocument:
    """One JSONL line as a document; raises ValueError with the reason it is unusable."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(row, dict):
        raise ValueError(f"not a JSON object: {type(row).__name__}")
    content = row.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ValueError("missing or empty `content`")
    if row.get("id") in (None, ""):
        raise ValueError("missing `id`")
    source = str(row.get("source") or default_source)
    actions = row.get("actions")
    label = row.get("label")
    return KBDocument(
        source=source,
        doc_id=str(row["id"]),
        type=str(row.get("type") or source),
        content=content.strip(),
        label=str(label) if label not in (None, "") else None,
        actions=(actions if isinstance(actions, str) else json.dumps(actions, sort_keys=True))
        if actions is not None else None,
    )


def load_corpus(corpus_dir: Path | str) -> Corpus:
    """Every `*.jsonl` under `corpus_dir` (sorted), valid documents kept, problems listed.

    A document id seen twice in one source is a problem too (the first one wins), so
    chunk ids stay unique and a copy-paste error is visible.
    """
    root = Path(corpus_dir)
    corpus = Corpus()
    seen: set[tuple[str, str]] = set()
    files = sorted(root.rglob("*.jsonl")) if root.is_dir() else []
    for path in files:
        name = str(path.relative_to(root))
        corpus.files.append(name)
        with path.open(encoding="utf-8", errors="replace") as f:
            for number, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    doc = parse_kb_line(text, default_source=path.stem)
                except ValueError as exc:
                    corpus.problems.append(CorpusProblem(name, number, str(exc)))
                    continue
                if (doc.source, doc.doc_id) in seen:
                    corpus.problems.append(CorpusProblem(name, number, f"duplicate id {doc.doc_id!r} in {doc.source}"))
                    continue
                seen.add((doc.source, doc.doc_id))
                corpus.documents.append(doc)
    if not corpus.documents:
        where = f"{len(files)} JSONL file(s)" if files else "no *.jsonl file"
        raise EmptyCorpusError(
            f"the KB corpus at {root} is empty: {where}, 0 valid documents"
            + (f", {len(corpus.problems)} bad line(s), first: {corpus.problems[0]}" if corpus.problems else "")
            + "; refusing to publish an empty knowledge base"
        )
    return corpus


def load_golden_queries(path: Path | str) -> list[GoldenQuery]:
    """The retrieval golden set: one `{"query", "relevant_doc_ids"}` object per line."""
    queries = []
    with Path(path).open(encoding="utf-8") as f:
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
