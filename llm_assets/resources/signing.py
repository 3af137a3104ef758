"""`AuditSigner`: the HMAC key that signs audit records, resolved when a run sets the resource up.

Resolving the key at set-up (not when the first record is written) means a production run
without `AUDIT_SIGNING_KEY` fails before it writes anything: with `EnvVar("AUDIT_SIGNING_KEY")`
Dagster refuses the run config at launch, and an empty value fails the resource's set-up.
The local default instead keeps a key file, generated (32 random bytes, mode 0600) on
first use. Generic: it holds key bytes; what is signed and how is the caller's format.
"""

import hashlib
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

SIGNING_KEY_VARIABLE = "AUDIT_SIGNING_KEY"
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


class MissingSigningKey(RuntimeError):
    """No audit signing key where one is required."""


def key_id(key: bytes) -> str:
    """A public name for a key: the first 12 hex digits of its sha256."""
    return hashlib.sha256(key).hexdigest()[:12]


@dataclass(frozen=True, repr=False)
class SigningKey:
    key: bytes
    source: str  # where the key came from, for logs; never the key itself

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"SigningKey(key_id={self.key_id!r}, source={self.source!r})"


def _key_from_text(text: str) -> bytes:
    """Hex text (even length) is decoded to bytes; any other text is used as UTF-8 bytes."""
    text = text.strip()
    return bytes.fromhex(text) if _HEX.match(text) else text.encode()


def _read_key_file(path: Path) -> bytes:
    text = path.read_text().strip()
    if not _HEX.match(text) or len(text) < 32:
        raise MissingSigningKey(f"the audit signing key file {path} is damaged (expected hex text); "
                                f"restore it or set {SIGNING_KEY_VARIABLE}")
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


def load_signing_key(key: str | None, key_file: str | Path | None, *, create: bool) -> SigningKey:
    """The signing key: `key` when given (hex is decoded, other text used as its bytes), else the
    key in `key_file` (generated there on first use when `create`), else `MissingSigningKey`."""
    if key is not None and key.strip():
        return SigningKey(_key_from_text(key), source=f"{SIGNING_KEY_VARIABLE} (configured key)")
    if key_file is None:
        raise MissingSigningKey(
            f"{SIGNING_KEY_VARIABLE} is not set (or empty): outside the local default the audit signing key "
            f"must come from {SIGNING_KEY_VARIABLE} (e.g. 64 hex digits from a secret store)")
    path = Path(key_file)
    if path.exists():
        return SigningKey(_read_key_file(path), source=f"local key file {path}")
    if not create:
        raise MissingSigningKey(f"{SIGNING_KEY_VARIABLE} is not set and there is no local key file at {path}")
    created = _create_key_file(path)
    return SigningKey(_read_key_file(path),
                      source=f"local key file {path}" + (" (generated on first use)" if created else ""))


class AuditSigner(dg.ConfigurableResource):
    """The audit signing key: `key` (production: `EnvVar("AUDIT_SIGNING_KEY")`), or on the local
    default a `key_file` generated on first use. Resolved when a run sets the resource up."""

    key: str | None = Field(default=None, description="AUDIT_SIGNING_KEY: 64 hex digits (or any text)")
    key_file: str | None = Field(default=None, description="local default only: key file generated on first use")

    _signing_key: SigningKey | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._signing_key = load_signing_key(self.key, self.key_file, create=True)
        if context.log is not None:
            context.log.info(f"audit signing key {self._signing_key.key_id} from {self._signing_key.source}")

    @property
    def signing_key(self) -> SigningKey:
        if self._signing_key is None:  # used outside a run (a script): resolve now
            self._signing_key = load_signing_key(self.key, self.key_file, create=True)
        return self._signing_key
