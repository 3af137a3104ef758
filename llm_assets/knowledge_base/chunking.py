"""Splitting KB documents into overlapping chunks with stable, content-derived ids; no Dagster.

A document is cut along its headings first: each section (a Markdown or HTML heading's text,
a PDF page, a whole text file, a JSONL document's `content`) becomes one chunk, or several
overlapping windows when it is longer than `ChunkingParams.size`. A chunk never spans two
sections and carries its section's heading path.

A chunk id is a hash of where the text comes from (source, document id, and for a file
document the heading path) and the text itself, so an unchanged chunk keeps its id across
rebuilds and its embedding is reused, and the same sentence under two headings is two
chunks. JSONL documents have no heading: their ids are what they always were. The chunking
parameters are not part of the id (the same text embeds the same) but are part of the index
version (`versioning.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Iterator

from llm_assets.knowledge_base.corpus import KBDocument, Section

CHUNK_UNITS = ("words", "chars")


@dataclass(frozen=True)
class ChunkingParams:
    size: int = 200
    overlap: int = 40
    unit: str = "words"

    def __post_init__(self) -> None:
        if self.unit not in CHUNK_UNITS:
            raise ValueError(f"chunk unit {self.unit!r}: expected one of {CHUNK_UNITS}")
        if self.size <= 0 or not 0 <= self.overlap < self.size:
            raise ValueError(f"need size > 0 and 0 <= overlap < size, got size={self.size} overlap={self.overlap}")

    @property
    def fingerprint(self) -> str:
        """How the chunks were cut, e.g. `words:200:40` (stored with every chunk)."""
        return f"{self.unit}:{self.size}:{self.overlap}"

    @classmethod
    def from_fingerprint(cls, text: str) -> "ChunkingParams":
        unit, size, overlap = text.split(":")
        return cls(size=int(size), overlap=int(overlap), unit=unit)


@dataclass(frozen=True)
class KBChunk:
    source: str
    doc_id: str
    chunk_id: str
    type: str
    content: str
    label: str | None
    actions: str | None
    chunking: str
    heading: str | None = None  # the section's heading path ("Runbook > Escalation"); None for JSONL documents
    document_sha256: str | None = None  # of the document's bytes (file) or canonical JSON (JSONL line)


def _windows(n: int, size: int, overlap: int) -> Iterator[tuple[int, int]]:
    step = size - overlap
    start = 0
    while True:
        yield start, min(start + size, n)
        if start + size >= n:
            return
        start += step


def split_text(text: str, params: ChunkingParams) -> list[str]:
    """Overlapping windows of `params.size` words (or characters); a short text is one chunk as it is."""
    text = text.strip()
    if not text:
        return []
    if params.unit == "words":
        words = text.split()
        if len(words) <= params.size:
            return [text]
        return [" ".join(words[a:b]) for a, b in _windows(len(words), params.size, params.overlap)]
    if len(text) <= params.size:
        return [text]
    pieces = (text[a:b].strip() for a, b in _windows(len(text), params.size, params.overlap))
    return [p for p in pieces if p]


def chunk_id(source: str, doc_id: str, content: str, occurrence: int = 0, heading: str | None = None) -> str:
    """32 hex characters of sha256 over (source, doc id, text[, repeat number][, heading path]).

    Without a heading (JSONL documents) the key is exactly what it was before headings existed.
    """
    key = f"{source}\x1f{doc_id}\x1f{content}"
    if occurrence:
        key += f"\x1f{occurrence}"
    if heading is not None:
        key += f"\x1fheading\x1f{heading}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def chunk_documents(documents: Iterable[KBDocument], params: ChunkingParams) -> list[KBChunk]:
    chunks = []
    for doc in documents:
        seen: dict[tuple[str | None, str], int] = {}
        for section in doc.sections or (Section(None, doc.content),):
            for piece in split_text(section.text, params):
                occurrence = seen.get((section.heading, piece), 0)
                seen[(section.heading, piece)] = occurrence + 1
                chunks.append(KBChunk(
                    doc.source, doc.doc_id, chunk_id(doc.source, doc.doc_id, piece, occurrence, section.heading),
                    doc.type, piece, doc.label, doc.actions, params.fingerprint, section.heading, doc.sha256))
    return chunks


KB_DOCUMENTS_SCHEMA = {"source": "str", "doc_id": "str", "chunk_id": "str", "type": "str", "content": "str",
                       "label": "str", "actions": "str", "chunking": "str", "heading": "str",
                       "document_sha256": "str"}


def chunks_frame(chunks: Iterable[KBChunk]):
    """The `kb/documents` table: one row per chunk, string columns (label, actions, heading nullable)."""
    import polars as pl

    rows = [c.__dict__ for c in chunks]
    return pl.DataFrame(rows, schema={name: pl.String for name in KB_DOCUMENTS_SCHEMA}, orient="row")
