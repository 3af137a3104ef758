"""KB index versions, collection names and which old collections to drop; no Dagster.

A version is a short hash of everything that changes what retrieval returns: the
embedding model id, the chunking parameters, and every chunk's id (a content hash) with
the metadata stored beside its vector (type, label, actions). Same inputs, same version:
a rebuild with no change is a no-op. Each version lives in its own collection, and the
alias `kb` points at the one serving.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

VERSION_LENGTH = 12
COLLECTION_PREFIX = "kb_"
# Collection properties that identify a KB version collection and its age.
PROP_VERSION = "kb.version"
PROP_MODEL_ID = "kb.model_id"
PROP_CHUNKING = "kb.chunking"
PROP_BUILT_AT = "kb.built_at_ns"
PROP_CHUNK_COUNT = "kb.chunk_count"
PROP_TYPES = "kb.types"  # JSON list of the document types, for per-type retrieval


def chunk_fingerprint(chunk_id: str, type_: str | None, label: str | None, actions: str | None) -> str:
    return "\x1f".join([chunk_id, type_ or "", label or "", actions or ""])


def index_version(model_id: str, chunking: str, fingerprints: Iterable[str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"model={model_id}\nchunking={chunking}\n".encode())
    for fp in sorted(fingerprints):
        digest.update(fp.encode("utf-8") + b"\n")
    return digest.hexdigest()[:VERSION_LENGTH]


def collection_name(version: str) -> str:
    return f"{COLLECTION_PREFIX}{version}"


def version_of(collection: str | None) -> str | None:
    if collection and collection.startswith(COLLECTION_PREFIX):
        return collection[len(COLLECTION_PREFIX):]
    return None


@dataclass(frozen=True)
class VersionCollection:
    name: str
    built_at_ns: int


def collections_to_drop(collections: Iterable[VersionCollection], protected: set[str], keep_previous: int) -> list[str]:
    """The version collections beyond the newest `keep_previous` unprotected ones.

    `protected` (the alias target and the candidate just built) are never dropped and do
    not count towards `keep_previous`.
    """
    old = sorted((c for c in collections if c.name not in protected), key=lambda c: c.built_at_ns, reverse=True)
    return [c.name for c in old[max(0, keep_previous):]]
