"""Signed audit bundles for `enriched/cases` runs, and their verification.

A bundle covers the cases ONE run wrote to ONE partition (a micro-batch's increment, or every case
of the date on a full refresh); a partition's audit is the set of its run bundles, each verifiable
on its own, and a run that wrote nothing to a date writes no bundle for it. A bundle records, per case, the route taken, the model / prompt / KB index versions, the
retrieved documents, the chosen actions with their approval levels and the hash of the
redacted prompt. It is signed with HMAC-SHA256 over its canonical JSON serialization and
written as ONE file in the artifact store (so it outlives the run's pod):

    <artifact root>/audit/enriched_cases/<partition>/<run id or timestamp>.json
    {"bundle": {...}, "signature": {"alg": "HMAC-SHA256", "key_id": "<sha256(key)[:12]>", "value": "<hex>"}}

The file itself is written in canonical form (sorted keys, no spaces, one trailing newline),
so verification covers every byte: the signature covers the bundle, the key id is checked
against the key, and the file must be exactly the canonical form of what it parses to.
The key comes from the `AuditSigner` resource (`resources/signing.py`); no Dagster API here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, Mapping

from llm_assets.resources.signing import key_id

if TYPE_CHECKING:
    from llm_assets.resources.artifacts import ArtifactStore

# /2: each case also carries label, severity, gate_version and row_sha256 (the hash of every decision field).
BUNDLE_FORMAT = "llm-assets-audit/2"
KNOWN_FORMATS = ("llm-assets-audit/1", BUNDLE_FORMAT)
SIGNATURE_ALG = "HMAC-SHA256"
AUDIT_PREFIX = "audit"

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class VerificationResult:
    ok: bool
    reason: str
    partition: str | None = None  # only reported once the signature verified
    event_ids: list[str] = field(default_factory=list)
    row_hashes: dict[str, str | None] = field(default_factory=dict)  # event_id -> row_sha256 (format /2)


# --- canonical form and signature -------------------------------------------------------------


def canonical_bytes(obj: object) -> bytes:
    """The one serialization that is signed: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sign(bundle: dict, key: bytes) -> dict:
    return {"alg": SIGNATURE_ALG, "key_id": key_id(key),
            "value": hmac.new(key, canonical_bytes(bundle), hashlib.sha256).hexdigest()}


# --- building bundles -------------------------------------------------------------------------


def _json_list(value: object, what: str, event_id: str) -> list:
    """Delta rows may carry list columns as JSON text; accept both."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError as exc:
            raise ValueError(f"case {event_id}: {what} is not valid JSON: {exc}") from exc
    if hasattr(value, "tolist"):  # numpy / polars arrays
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"case {event_id}: {what} must be a list, got {type(value).__name__}")
    return list(value)


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


# The fields of an enriched row that a decision and its provenance rest on; `row_sha256` hashes them
# (not `enriched_at`: rewriting the same decision is the same content version).
DECISION_FIELDS = ("event_id", "event_date", "source_sha256", "summary", "label", "confidence", "actions",
                   "severity", "route", "fallback_reason", "model_version", "prompt_version", "kb_index_version",
                   "gate_version", "gate_confidence", "retrieved_doc_ids", "redacted_prompt_sha256", "input_sha256",
                   "llm_calls", "served_from_cache")


def row_sha256(row: Mapping) -> str:
    """The content version of an enriched row: sha256 of the canonical JSON of its decision fields.

    Bundles record it per case, the row carries it (`row_sha256`), `cases.enriched` messages carry
    it, and `verify-audit` recomputes it from the row as stored: an edited label, severity or
    summary no longer matches the bundle that vouched for it.
    """
    values = {}
    for name in DECISION_FIELDS:
        value = row.get(name)
        if hasattr(value, "tolist"):  # numpy / polars arrays
            value = value.tolist()
        elif hasattr(value, "item"):  # numpy scalars
            value = value.item()
        values[name] = list(value) if isinstance(value, tuple) else value
    return hashlib.sha256(canonical_bytes(values)).hexdigest()


def _audit_case(row: Mapping) -> dict:
    event_id = row.get("event_id")
    if not event_id:
        raise ValueError(f"every audited case needs an event_id; got row with keys {sorted(row)}")
    event_id = str(event_id)
    actions = []
    for action in _json_list(row.get("actions"), "actions", event_id):
        if not isinstance(action, Mapping) or "action" not in action:
            raise ValueError(f"case {event_id}: each action needs an `action` field, got {action!r}")
        actions.append({"action": str(action["action"]), "reason": _optional_str(action.get("reason")),
                        "approval_level": _optional_str(action.get("approval_level"))})
    return {
        "event_id": event_id,
        "route": _optional_str(row.get("route")),
        "model_version": _optional_str(row.get("model_version")),
        "prompt_version": _optional_str(row.get("prompt_version")),
        "kb_index_version": _optional_str(row.get("kb_index_version")),
        "retrieved_doc_ids": [str(d) for d in _json_list(row.get("retrieved_doc_ids"), "retrieved_doc_ids", event_id)],
        "actions": actions,
        "redacted_prompt_sha256": _optional_str(row.get("redacted_prompt_sha256")),
        "label": _optional_str(row.get("label")),
        "severity": None if row.get("severity") is None else int(row["severity"]),
        "gate_version": _optional_str(row.get("gate_version")),
        "row_sha256": row.get("row_sha256") or row_sha256(row),
    }


def build_bundle(
    partition_key: str,
    rows: Iterable[Mapping],
    *,
    asset_key: str = "enriched/cases",
    run_id: str | None = None,
    created_at: datetime | None = None,
    delta_version: int | None = None,
    mode: str | None = None,
) -> dict:
    """The audit bundle of one run's cases in one partition: one entry per case, sorted by event_id.

    `delta_version` (the `enriched/cases` commit that wrote the cases) and `mode` (`incremental` or
    `full_refresh`) are recorded when given.

    Only the audited fields are kept (route, versions, retrieved documents, actions with
    approval levels, redacted prompt hash): never the case text. A duplicate event_id is an
    error, since a partition holds one row per event.
    """
    cases = sorted((_audit_case(row) for row in rows), key=lambda c: c["event_id"])
    seen: set[str] = set()
    for case in cases:
        if case["event_id"] in seen:
            raise ValueError(f"event_id {case['event_id']} appears twice in partition {partition_key}")
        seen.add(case["event_id"])
    moment = (created_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    written = {k: v for k, v in (("delta_version", delta_version), ("mode", mode)) if v is not None}
    return {
        **written,
        "format": BUNDLE_FORMAT,
        "asset_key": asset_key,
        "partition": str(partition_key),
        "created_at": moment.isoformat().replace("+00:00", "Z"),
        "run_id": run_id,
        "case_count": len(cases),
        "cases": cases,
    }


# --- writing ----------------------------------------------------------------------------------


def _safe_component(value: str, what: str) -> str:
    name = _SAFE_NAME.sub("_", value).strip("._")
    if not name:
        raise ValueError(f"{what} {value!r} cannot name a file")
    return name


def bundle_folder(partition_key: str, asset_key: str = "enriched/cases") -> str:
    """`audit/<asset key with _>/<partition>`: the folder of a partition's bundles, relative to the root."""
    asset_dir = _safe_component(str(asset_key).replace("/", "_"), "asset key")
    return f"{AUDIT_PREFIX}/{asset_dir}/{_safe_component(str(partition_key), 'partition')}"


def bundle_path(bundle: Mapping) -> str:
    """`audit/<asset key with _>/<partition>/<run id or created_at>.json`, relative to the artifact root."""
    stem = bundle.get("run_id") or re.sub(r"[-:]", "", str(bundle["created_at"]))
    return f"{bundle_folder(str(bundle['partition']), str(bundle['asset_key']))}/{_safe_component(str(stem), 'run id')}.json"


def write_bundle(store: ArtifactStore, bundle: dict, key: bytes) -> str:
    """Sign `bundle` and write it atomically to `store`; returns its path in the store.

    A second write for the same run replaces the first, so a retried step leaves one bundle.
    """
    path = bundle_path(bundle)
    store.write_bytes(path, canonical_bytes({"bundle": bundle, "signature": sign(bundle, key)}) + b"\n")
    return path


# --- verifying --------------------------------------------------------------------------------


def _fail(reason: str) -> VerificationResult:
    return VerificationResult(ok=False, reason=reason)


def bundle_format(raw: bytes) -> str | None:
    """The `format` a bundle file declares (None when it is not a readable bundle)."""
    try:
        document = json.loads(raw.decode("utf-8"))
        return document["bundle"]["format"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def verify_bundle(raw: bytes, key: bytes) -> VerificationResult:
    """Check the bytes of a bundle file against `key`. Never raises: a failure comes back with its reason."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return _fail(f"not a readable bundle: the file is not valid JSON ({exc}); it was damaged or edited")
    if not isinstance(document, dict) or set(document) != {"bundle", "signature"}:
        return _fail("not a bundle file: expected exactly the fields `bundle` and `signature`")
    bundle, signature = document["bundle"], document["signature"]
    if not isinstance(bundle, dict) or not isinstance(signature, dict):
        return _fail("not a bundle file: `bundle` and `signature` must be objects")
    if signature.get("alg") != SIGNATURE_ALG:
        return _fail(f"unsupported signature algorithm {signature.get('alg')!r} (expected {SIGNATURE_ALG})")
    if not isinstance(signature.get("key_id"), str) or not isinstance(signature.get("value"), str):
        return _fail("signature is incomplete: `key_id` and `value` must be strings")
    expected_key_id = key_id(key)
    if not hmac.compare_digest(signature["key_id"], expected_key_id):
        return _fail(f"signed with key id {signature['key_id']}, but the key given has id {expected_key_id}: "
                     "wrong key (or the key id was edited)")
    try:
        expected_value = sign(bundle, key)["value"]
    except ValueError as exc:
        return _fail(f"bundle content cannot be serialized canonically: {exc}")
    if not hmac.compare_digest(signature["value"], expected_value):
        return _fail("signature does not match the content: the bundle was changed after it was signed")
    try:
        canonical_file = canonical_bytes(document) + b"\n"
    except ValueError as exc:
        return _fail(f"file cannot be serialized canonically: {exc}")
    if raw != canonical_file:
        # Same meaning, different bytes (whitespace, escapes, key order): edited by hand or a tool.
        return _fail("the signed content verifies, but the file's bytes were changed (it is not in the "
                     "canonical form it was written in)")
    if bundle.get("format") not in KNOWN_FORMATS:
        return _fail(f"unknown bundle format {bundle.get('format')!r} (expected one of {', '.join(KNOWN_FORMATS)})")
    cases = bundle.get("cases")
    if not isinstance(cases, list) or bundle.get("case_count") != len(cases):
        return _fail("bundle is inconsistent: case_count does not match the cases listed")
    event_ids = [str(case.get("event_id")) for case in cases if isinstance(case, dict)]
    return VerificationResult(ok=True, reason=f"signature valid (HMAC-SHA256, key id {expected_key_id})",
                              partition=bundle.get("partition"), event_ids=event_ids,
                              row_hashes={str(c.get("event_id")): c.get("row_sha256") for c in cases
                                          if isinstance(c, dict)})
