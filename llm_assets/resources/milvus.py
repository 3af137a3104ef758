"""`MilvusResource`: the KB vector store (Milvus Lite file, `milvus-lite server`, or Milvus).

Owns the chunk-collection schema, index parameters (HNSW by default, IVF_FLAT as an
option; inner product on unit vectors = cosine) and the collection/alias operations the
blue-green `kb/index` needs. `pymilvus` is imported lazily. A Milvus Lite *file* admits
one process at a time: for concurrent runs point `MILVUS_URI` at `milvus-lite server`
(`llm_assets.dev.milvus.start_milvus_server`) or a Milvus server.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import dagster as dg
import numpy as np
from pydantic import Field, PrivateAttr

from llm_assets.settings import milvus_uri

_log = logging.getLogger(__name__)
# Milvus VARCHAR limits are in bytes; content longer than this is cut (retrieval shows a prefix).
MAX_CONTENT_BYTES = 60_000
CHUNK_FIELDS = ("chunk_id", "source", "doc_id", "type", "label", "actions", "content")
_VARCHAR_LENGTHS = {"chunk_id": 64, "source": 256, "doc_id": 512, "type": 128, "label": 128,
                    "actions": 16_384, "content": 65_535}
# `in` filters are sent in slices so a large KB never builds one huge expression.
_ID_SLICE = 500


def is_server_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "unix:"))


def _truncate_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _import_pymilvus() -> None:
    """Import pymilvus once, with `MILVUS_URI` hidden from it when it names a Milvus Lite file.

    pymilvus reads `MILVUS_URI` at import for its default connection and rejects anything but a
    URL ("Illegal uri"), while our contract (ARCHITECTURE section 5) also allows a file path there.
    The resource passes the URI explicitly, so pymilvus's own default is never used.

    The one module outside `settings.py` and `resources/environments.py` that touches the process
    environment (a pymilvus quirk, not a setting: the variable is removed for the import and put back
    as it was); `tests/test_architecture.py` allows this function by name.
    """
    import os
    import sys

    if "pymilvus" in sys.modules:
        return
    value = os.environ.get("MILVUS_URI")
    if value is None or is_server_uri(value):
        import pymilvus  # noqa: F401
        return
    del os.environ["MILVUS_URI"]
    try:
        import pymilvus  # noqa: F401
    finally:
        os.environ["MILVUS_URI"] = value


# pymilvus pings every 10 s even on an idle channel; a gRPC server with default settings (Milvus
# Lite's) counts those as abuse, answers GOAWAY "too_many_pings" and the next call on the channel
# fails with UNAVAILABLE. Pinging only while a call is in flight keeps dead-peer detection for
# long calls and never trips the server's limit.
IDLE_KEEPALIVE_OFF = {"grpc.keepalive_permit_without_calls": False}


class MilvusUnavailableError(RuntimeError):
    """The Milvus server refused connections for longer than the resource's outage budget."""


class MilvusResource(dg.ConfigurableResource):
    """A pymilvus `MilvusClient` on `uri`: a Milvus Lite file path by default, a server for a URL."""

    uri: str = Field(default="", description="MILVUS_URI; empty = $LLM_ASSETS_HOME/milvus/kb.db (Milvus Lite file)")
    token: str = Field(default="", description="server token (user:password), unused for Milvus Lite")
    index_type: str = Field(default="HNSW", description="HNSW or IVF_FLAT (FLAT also accepted)")
    outage_budget_s: float = Field(default=60.0, description="how long a run waits for a Milvus server that refuses "
                                                             "connections before its step fails (retried later)")
    connect_timeout_s: float = Field(default=60.0, description="how long connecting, and reconnecting after the "
                                                               "client was idle for 30 s, waits for the server")
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 64
    ivf_nlist: int = 128
    ivf_nprobe: int = 16

    _client: Any = PrivateAttr(default=None)
    _loaded: set = PrivateAttr(default_factory=set)

    # -- connection ---------------------------------------------------------------------------
    @property
    def resolved_uri(self) -> str:
        return self.uri or milvus_uri()

    @property
    def client(self) -> Any:
        if self._client is None:
            _import_pymilvus()
            from pymilvus import MilvusClient

            uri = self.resolved_uri
            if not is_server_uri(uri):
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
            # pymilvus checks a connection idle for 30 s and reconnects it, waiting 10 s by default: a
            # milvus-lite server busy on a loaded 2-core machine (an index just built, the run's own CPU
            # work) once missed that and failed the demo's model evaluation step.
            self._client = self._connect(lambda: MilvusClient(uri=uri, token=self.token or "",
                                                              timeout=self.connect_timeout_s,
                                                              grpc_options=IDLE_KEEPALIVE_OFF))
        return self._client

    def _connect(self, make_client):
        """`make_client()`, retried with doubling waits for up to `outage_budget_s` while the server
        refuses connections (pymilvus fails at once then: a server restarting, or one that died and
        that `make dev` or the platform is bringing back); after that the step fails with the reason,
        and the run is requested again later (kafka_events_sensor, automation)."""
        deadline = time.monotonic() + self.outage_budget_s
        wait = 1.0
        while True:
            try:
                return make_client()
            except Exception as exc:  # noqa: BLE001 - pymilvus raises MilvusException (and grpc errors) here
                if not is_server_uri(self.resolved_uri) or time.monotonic() + wait > deadline:
                    if is_server_uri(self.resolved_uri):
                        raise MilvusUnavailableError(
                            f"Milvus at {self.resolved_uri} unavailable for {self.outage_budget_s:g}s: {exc}") from exc
                    raise
                _log.warning(f"Milvus at {self.resolved_uri} unavailable ({exc}); retrying in {wait:g}s")
                time.sleep(wait)
                wait = min(wait * 2, 10.0)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._loaded = set()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    # -- collections --------------------------------------------------------------------------
    def list_collections(self) -> list[str]:
        return list(self.client.list_collections())

    def has_collection(self, name: str) -> bool:
        return bool(self.client.has_collection(name))

    def collection_properties(self, name: str) -> dict[str, str]:
        return dict(self.client.describe_collection(name).get("properties") or {})

    def index_params(self, expected_rows: int) -> dict[str, Any]:
        """Build-time parameters of the vector index for a collection of `expected_rows`."""
        kind = self.index_type.upper()
        if kind == "HNSW":
            return {"index_type": "HNSW", "params": {"M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction}}
        if kind == "IVF_FLAT":
            # faiss wants ~39 points per centroid; a small KB gets fewer lists.
            return {"index_type": "IVF_FLAT", "params": {"nlist": max(1, min(self.ivf_nlist, expected_rows // 39))}}
        if kind in {"FLAT", "AUTOINDEX"}:
            return {"index_type": kind, "params": {}}
        raise ValueError(f"unsupported index_type {self.index_type!r}: use HNSW, IVF_FLAT, FLAT or AUTOINDEX")

    def search_params(self) -> dict[str, Any]:
        kind = self.index_type.upper()
        params: dict[str, Any] = {}
        if kind == "HNSW":
            params = {"ef": self.hnsw_ef_search}
        elif kind == "IVF_FLAT":
            params = {"nprobe": self.ivf_nprobe}
        return {"metric_type": "IP", "params": params}

    def create_chunk_collection(self, name: str, dimension: int, *, expected_rows: int,
                                properties: Mapping[str, str] | None = None) -> None:
        """Create one KB version's collection (chunk fields + `vector`), indexed for IP search."""
        _import_pymilvus()
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=_VARCHAR_LENGTHS["chunk_id"])
        for field in CHUNK_FIELDS[1:]:
            schema.add_field(field, DataType.VARCHAR, max_length=_VARCHAR_LENGTHS[field])
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dimension))
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", metric_type="IP", **self.index_params(expected_rows))
        self.client.create_collection(name, schema=schema, index_params=index,
                                      properties={k: str(v) for k, v in (properties or {}).items()})

    def insert_chunks(self, name: str, rows: Sequence[Mapping[str, Any]], vectors: np.ndarray,
                      batch_size: int = 1000, flush: bool = True) -> int:
        """Insert chunk rows with their vectors (same order); returns the number inserted.

        `flush=False` leaves sealing to one `flush(name)` after several inserts.
        """
        if len(rows) != len(vectors):
            raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
        inserted = 0
        for start in range(0, len(rows), batch_size):
            batch = []
            for row, vector in zip(rows[start:start + batch_size], vectors[start:start + batch_size]):
                record = {f: _truncate_bytes(str(row.get(f) or ""), _VARCHAR_LENGTHS[f] - 1)
                          for f in CHUNK_FIELDS if f != "content"}
                record["content"] = _truncate_bytes(str(row.get("content") or ""), MAX_CONTENT_BYTES)
                record["vector"] = np.asarray(vector, dtype=np.float32).tolist()
                batch.append(record)
            inserted += int(self.client.insert(name, batch)["insert_count"])
        if flush:
            self.flush(name)
        return inserted

    def flush(self, name: str) -> None:
        """Seal the segments so the vector index is built: Milvus Lite searches unsealed
        (growing) rows by brute force, about 15x slower on a 1k-chunk KB."""
        self.client.flush(name)

    def ensure_loaded(self, name: str) -> None:
        """Load `name` (a collection, or the collection behind an alias) for search and query.

        A reopened Milvus Lite file, or a restarted server, keeps collections released.
        """
        _import_pymilvus()
        from pymilvus.client.types import LoadState

        target = self.alias_target(name) or name
        if target in self._loaded:
            return
        if self.client.get_load_state(target).get("state") != LoadState.Loaded:
            self.client.load_collection(target)
        self._loaded.add(target)

    def count(self, name: str) -> int:
        self.ensure_loaded(name)
        rows = self.client.query(name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def fetch_vectors(self, name: str, chunk_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those `chunk_ids` present in `name` (absent ids are skipped)."""
        ids = list(dict.fromkeys(chunk_ids))
        if ids:
            self.ensure_loaded(name)
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), _ID_SLICE):
            part = ids[start:start + _ID_SLICE]
            expr = "chunk_id in [" + ", ".join(_quote(i) for i in part) + "]"
            for row in self.client.query(name, filter=expr, output_fields=["chunk_id", "vector"], limit=len(part)):
                found[row["chunk_id"]] = np.asarray(row["vector"], dtype=np.float32)
        return found

    def search(self, name: str, vectors: np.ndarray, limit: int, output_fields: Sequence[str] = CHUNK_FIELDS,
               where: Mapping[str, str] | None = None) -> list[list[dict[str, Any]]]:
        """Top-`limit` hits per query vector in `name` (a collection or an alias), best first.

        `where` restricts to rows whose fields equal the given values. Each hit is the
        entity's fields plus `score` (inner product = cosine on unit vectors).
        """
        if len(vectors) == 0:
            return []
        self.ensure_loaded(name)
        result = self.client.search(name, data=[np.asarray(v, dtype=np.float32).tolist() for v in vectors],
                                    limit=limit, output_fields=list(output_fields),
                                    search_params=self.search_params(), anns_field="vector",
                                    filter=" and ".join(f"{k} == {_quote(v)}" for k, v in (where or {}).items()))
        return [[{**hit["entity"], "score": float(hit["distance"])} for hit in hits] for hits in result]

    def search_per_group(self, name: str, vectors: np.ndarray, limit: int, group_field: str,
                         group_limits: Mapping[str, int],
                         output_fields: Sequence[str] = CHUNK_FIELDS) -> list[list[dict[str, Any]]]:
        """Top-`limit` hits per query vector with at most `group_limits[v]` hits whose `group_field` is `v`.

        One round trip: a hybrid search of one filtered sub-search per group, merged on
        the raw inner product (the groups are disjoint, so no hit is counted twice).
        """
        _import_pymilvus()
        from pymilvus import AnnSearchRequest, WeightedRanker

        groups = [(value, n) for value, n in group_limits.items() if n > 0]
        if len(vectors) == 0 or not groups:
            return [[] for _ in range(len(vectors))]
        self.ensure_loaded(name)
        data = [np.asarray(v, dtype=np.float32).tolist() for v in vectors]
        requests = [AnnSearchRequest(data, "vector", self.search_params(), limit=n,
                                     expr=f"{group_field} == {_quote(value)}") for value, n in groups]
        result = self.client.hybrid_search(name, requests, WeightedRanker(*[1.0] * len(requests), norm_score=False),
                                           limit=limit, output_fields=list(output_fields))
        return [[{**hit["entity"], "score": float(hit["distance"])} for hit in hits] for hits in result]

    def drop_collection(self, name: str) -> None:
        self.client.drop_collection(name)
        self._loaded.discard(name)

    # -- aliases ------------------------------------------------------------------------------
    def alias_target(self, alias: str) -> str | None:
        """The collection `alias` points to, or None (no error is logged for a missing alias)."""
        if alias not in (self.client.list_aliases().get("aliases") or []):
            return None
        return self.client.describe_alias(alias)["collection_name"]

    def point_alias(self, alias: str, collection: str) -> None:
        """Create `alias` on `collection`, or move it there in one step (the blue-green switch)."""
        if self.alias_target(alias) is None:
            self.client.create_alias(collection, alias)
        else:
            self.client.alter_alias(collection, alias)

    def drop_alias(self, alias: str) -> None:
        if self.alias_target(alias) is not None:
            self.client.drop_alias(alias)
