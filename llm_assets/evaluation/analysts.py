"""Who may rate: analyst accounts, their tokens, revocation, and the review that lifts a quarantine.

One JSON document in the artifact store (`analysts/registry.json`), so the rating page, the CLI and
the assets read the same accounts from any pod. A token is shown once, when it is issued
(`llm-assets analysts add NAME`); only its sha256 is stored (a token is 32 random bytes, so a plain
hash is as strong as a slow one here, and lets the page look one up in constant time). `revoke`
ends a token at once; `release` records that a reviewer looked at a flagged analyst's ratings and
trusts those given up to now (`evaluation.trust` quarantines only on ratings given after it).

No Dagster import: the page and the CLI use it without a run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from llm_assets.resources.artifacts import ArtifactStore

REGISTRY_PATH = "analysts/registry.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
CACHE_S = 2.0  # how long the page trusts what it read (a revocation takes effect within this)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Account:
    name: str
    token_sha256: str
    created_at: str
    revoked_at: str | None = None
    released_at: str | None = None  # the last review that lifted a quarantine

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class AnalystRegistry:
    """The analyst accounts in `store` (read-modify-write: the CLI and `make dev` are its only writers)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Account]] | None = None

    def accounts(self, *, fresh: bool = False) -> dict[str, Account]:
        with self._lock:
            if not fresh and self._cached and time.monotonic() - self._cached[0] < CACHE_S:
                return self._cached[1]
            try:
                document = json.loads(self.store.read_bytes(REGISTRY_PATH))
            except FileNotFoundError:
                document = {"analysts": []}
            accounts = {a["name"]: Account(**a) for a in document.get("analysts", [])}
            self._cached = (time.monotonic(), accounts)
            return accounts

    def _save(self, accounts: dict[str, Account]) -> None:
        body = {"analysts": [a.__dict__ for a in sorted(accounts.values(), key=lambda a: a.name)]}
        self.store.write_bytes(REGISTRY_PATH, json.dumps(body, indent=2, sort_keys=True).encode("utf-8"))
        with self._lock:
            self._cached = None

    def add(self, name: str, *, replace: bool = False) -> str:
        """A new account (or, with `replace`, a new token for an existing one); returns the token, once."""
        if not NAME.match(name):
            raise ValueError(f"analyst name {name!r}: letters, digits and . _ @ - only, at most 100")
        accounts = self.accounts(fresh=True)
        if name in accounts and accounts[name].active and not replace:
            raise ValueError(f"analyst {name!r} exists; revoke it first, or ask for a new token with --replace")
        token = secrets.token_urlsafe(32)
        previous = accounts.get(name)
        accounts[name] = Account(name=name, token_sha256=token_sha256(token), created_at=_now(),
                                 released_at=previous.released_at if previous else None)
        self._save(accounts)
        return token

    def revoke(self, name: str) -> None:
        accounts = self.accounts(fresh=True)
        if name not in accounts:
            raise KeyError(f"no analyst {name!r}")
        accounts[name] = Account(**{**accounts[name].__dict__, "revoked_at": _now()})
        self._save(accounts)

    def release(self, name: str) -> str:
        """Record a review of `name`'s ratings: those given up to now are trusted again."""
        accounts = self.accounts(fresh=True)
        if name not in accounts:
            raise KeyError(f"no analyst {name!r}")
        when = _now()
        accounts[name] = Account(**{**accounts[name].__dict__, "released_at": when})
        self._save(accounts)
        return when

    def authenticate(self, token: str | None) -> str | None:
        """The active analyst whose token this is, or None."""
        if not token:
            return None
        digest = token_sha256(token)
        for account in self.accounts().values():
            if account.active and hmac.compare_digest(account.token_sha256, digest):
                return account.name
        return None

    def released(self) -> dict[str, datetime]:
        """Analyst -> the time of their last review (for `evaluation.trust`)."""
        return {a.name: datetime.fromisoformat(a.released_at.replace("Z", "+00:00"))
                for a in self.accounts().values() if a.released_at}
