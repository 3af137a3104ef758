"""Signed audit bundles for `enriched/cases` partitions, their signing key, and their verification.

A bundle records, per case, the route taken, the model / prompt / KB index versions, the
retrieved documents, the chosen actions with their approval levels and the hash of the
redacted prompt. It is signed with HMAC-SHA256 over its canonical JSON serialization and
written as ONE file:

    <audit dir>/enriched_cases/<partition>/<run id or timestamp>.json
    {"bundle": {...}, "signature": {"alg": "HMAC-SHA256", "key_id": "<sha256(key)[:12]>", "value": "<hex>"}}

The file itself is written in canonical form (sorted keys, no spaces, one trailing newline),
so verification covers every byte: the signature covers the bundle, the key id is checked
against the key, and the file must be exactly the canonical form of what it parses to.
Pure logic: no Dagster import.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, TextIO

from llm_assets.storage.files import atomic_write_bytes

BUNDLE_FORMAT = "llm-assets-audit/1"
SIGNATURE_ALG = "HMAC-SHA256"
SIGNING_KEY_ENV = "AUDIT_SIGNING_KEY"
ENVIRONMENT_ENV = "LLM_ASSETS_ENV"
LOCAL_ENVIRONMENTS = ("", "local")
KEY_FILE = Path("audit") / "signing.key"
MAX_EVENT_IDS_SHOWN = 20

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


class MissingSigningKey(RuntimeError):
    """No audit signing key where one is required."""


@dataclass(frozen=True)
class SigningKey:
    key: bytes
    source: str  # where the key came from, for logs; never the key itself

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"SigningKey(key_id={self.key_id!r}, source={self.source!r})"


@dataclass(frozen=True)
class VerificationResult:
    ok: bool
    reason: str
    partition: str | None = None  # only reported once the signature verified
    event_ids: list[str] = field(default_factory=list)


# --- canonical form and signature -------------------------------------------------------------


def canonical_bytes(obj: object) -> bytes:
    """The one serialization that is signed: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def key_id(key: bytes) -> str:
    """A public name for a key: the first 12 hex digits of its sha256."""
    return hashlib.sha256(key).hexdigest()[:12]


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
    }


def build_bundle(
    partition_key: str,
    rows: Iterable[Mapping],
    *,
    asset_key: str = "enriched/cases",
    run_id: str | None = None,
    created_at: datetime | None = None,
) -> dict:
    """The audit bundle of one partition: one entry per case, sorted by event_id.

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
    return {
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


def bundle_path(directory: str | Path, bundle: Mapping) -> Path:
    """`<directory>/<asset key with _>/<partition>/<run id or created_at>.json`."""
    asset_dir = _safe_component(str(bundle["asset_key"]).replace("/", "_"), "asset key")
    partition_dir = _safe_component(str(bundle["partition"]), "partition")
    stem = bundle.get("run_id") or re.sub(r"[-:]", "", str(bundle["created_at"]))
    return Path(directory) / asset_dir / partition_dir / f"{_safe_component(str(stem), 'run id')}.json"


def write_bundle(directory: str | Path, bundle: dict, key: bytes) -> Path:
    """Sign `bundle` and write it atomically (temp file + rename); returns the file's path.

    A second write for the same run replaces the first, so a retried step leaves one bundle.
    """
    path = bundle_path(directory, bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = canonical_bytes({"bundle": bundle, "signature": sign(bundle, key)}) + b"\n"
    atomic_write_bytes(path, content)
    return path


# --- verifying --------------------------------------------------------------------------------


def _fail(reason: str) -> VerificationResult:
    return VerificationResult(ok=False, reason=reason)


def verify_bundle(path: str | Path, key: bytes) -> VerificationResult:
    """Check a bundle file against `key`. Never raises: a failure comes back with its reason."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {path}: {exc.strerror or exc}")
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
    if bundle.get("format") != BUNDLE_FORMAT:
        return _fail(f"unknown bundle format {bundle.get('format')!r} (expected {BUNDLE_FORMAT})")
    cases = bundle.get("cases")
    if not isinstance(cases, list) or bundle.get("case_count") != len(cases):
        return _fail("bundle is inconsistent: case_count does not match the cases listed")
    event_ids = [str(case.get("event_id")) for case in cases if isinstance(case, dict)]
    return VerificationResult(ok=True, reason=f"signature valid (HMAC-SHA256, key id {expected_key_id})",
                              partition=bundle.get("partition"), event_ids=event_ids)


# --- signing key ------------------------------------------------------------------------------


def _key_from_text(text: str) -> bytes:
    """Hex text (even length) is decoded to bytes; any other text is used as UTF-8 bytes."""
    text = text.strip()
    return bytes.fromhex(text) if _HEX.match(text) else text.encode()


def _read_key_file(path: Path) -> bytes:
    text = path.read_text().strip()
    if not _HEX.match(text) or len(text) < 32:
        raise MissingSigningKey(f"the audit signing key file {path} is damaged (expected hex text); "
                                f"restore it or set {SIGNING_KEY_ENV}")
    return bytes.fromhex(text)


def _create_key_file(path: Path) -> bool:
    """Write a fresh random key at `path` unless one exists; True when this call created it.

    The key goes to a private temp file first and is linked into place, so two processes
    starting at once agree on one key and nobody ever reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing.key.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
    finally:
        Path(tmp).unlink(missing_ok=True)


def resolve_signing_key(env: Mapping[str, str], home: str | Path, *, create: bool = True) -> SigningKey:
    """The audit signing key.

    1. `AUDIT_SIGNING_KEY` when set (hex is decoded; any other text is used as its bytes).
    2. On the local default (`LLM_ASSETS_ENV` unset or `local`): the key at
       `<home>/audit/signing.key`, generated (32 random bytes, mode 0600) on first use when
       `create` is true.
    3. Anywhere else: `MissingSigningKey`, naming the variable.
    """
    text = env.get(SIGNING_KEY_ENV)
    if text and text.strip():
        return SigningKey(_key_from_text(text), source=f"environment variable {SIGNING_KEY_ENV}")
    environment = (env.get(ENVIRONMENT_ENV) or "").strip().lower()
    if environment not in LOCAL_ENVIRONMENTS:
        raise MissingSigningKey(
            f"{SIGNING_KEY_ENV} is not set but {ENVIRONMENT_ENV}={env.get(ENVIRONMENT_ENV)!r}: outside the local "
            f"default the audit signing key must come from {SIGNING_KEY_ENV} (e.g. 64 hex digits from a secret store)"
        )
    path = Path(home) / KEY_FILE
    if path.exists():
        return SigningKey(_read_key_file(path), source=f"local key file {path}")
    if not create:
        raise MissingSigningKey(f"{SIGNING_KEY_ENV} is not set and there is no local key file at {path}")
    created = _create_key_file(path)
    return SigningKey(_read_key_file(path),
                      source=f"local key file {path}" + (" (generated on first use)" if created else ""))


# --- command ----------------------------------------------------------------------------------


def _bundle_files(target: Path) -> list[Path]:
    if target.is_dir():
        return sorted(p for p in target.rglob("*.json") if not p.name.startswith("."))
    return [target]


def verify_command(
    path: str,
    env: Mapping[str, str] = os.environ,
    home: str | Path | None = None,
    out: TextIO | None = None,
) -> int:
    """`llm-assets audit verify PATH`: verify one bundle file, or every bundle under a folder.

    Prints the verdict, partition, case count and covered event ids (first 20 and the count)
    for each bundle; returns 0 when all verify, 1 otherwise.
    """
    out = out or sys.stdout
    if home is None:
        from llm_assets.settings import llm_assets_home

        home = llm_assets_home()
    try:
        signing_key = resolve_signing_key(env, home, create=False)
    except MissingSigningKey as exc:
        print(f"FAILED: no signing key to verify with: {exc}", file=out)
        return 1
    files = _bundle_files(Path(path))
    if not files:
        print(f"FAILED: no bundle files under {path}", file=out)
        return 1
    all_ok = True
    for file in files:
        result = verify_bundle(file, signing_key.key)
        all_ok &= result.ok
        if not result.ok:
            print(f"FAILED {file}: {result.reason}", file=out)
            continue
        shown = ", ".join(result.event_ids[:MAX_EVENT_IDS_SHOWN])
        more = len(result.event_ids) - MAX_EVENT_IDS_SHOWN
        print(f"OK {file}: {result.reason}", file=out)
        print(f"  partition: {result.partition}", file=out)
        print(f"  cases: {len(result.event_ids)}", file=out)
        print(f"  event ids: {shown}" + (f" ... (+{more} more)" if more > 0 else ""), file=out)
    return 0 if all_ok else 1
