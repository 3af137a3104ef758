"""Who is at the rating page: the identity of each request, CSRF tokens, and a rate limit per analyst.

Two ways in, nothing else:
- **proxy**: behind an SSO / OIDC proxy, the identity header (`X-Forwarded-User` by default) is
  believed only from a configured proxy address (`RATING_TRUSTED_PROXIES`) that also sends the shared
  secret (`RATING_PROXY_SECRET`, header `X-Proxy-Secret`). The header from anywhere else is refused,
  even beside a valid token: someone is trying to be someone else.
- **token**: an analyst's token (`llm-assets analysts add NAME`) as `Authorization: Bearer ...` (scripts),
  or a browser session: `/login` takes the token once and keeps it in an HttpOnly, SameSite=Strict cookie.

A form posted by a browser (cookie or proxy) must carry the CSRF token the page rendered into it
(an HMAC of the identity under this process's secret); a bearer request cannot be forged cross-site,
so it needs none. The rate limit is a sliding minute per analyst, in this process (one page process per
deployment; replicas would each count their own). Hand-written: a few lines of the standard library
(`hmac`, `ipaddress`, a deque) against a session framework and a limiter service the page does not need.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from starlette.requests import Request

from llm_assets import settings
from llm_assets.evaluation.analysts import AnalystRegistry

SESSION_COOKIE = "llm_assets_session"
PROXY_SECRET_HEADER = "X-Proxy-Secret"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Identity:
    analyst: str
    method: str                # token | proxy
    needs_csrf: bool = True    # False for `Authorization: Bearer` requests


class Refused(Exception):
    """A request that must not go on: the status and why (said to the client)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class PageAuth:
    registry: AnalystRegistry
    trusted_proxies: list[str] = field(default_factory=list)
    proxy_secret: str | None = None
    identity_header: str = "X-Forwarded-User"
    per_minute: int = 30
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _sent: dict[str, deque] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _networks: list = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            self._networks = [ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies]
        except ValueError as exc:
            raise ValueError(f"RATING_TRUSTED_PROXIES: {exc} (IP addresses or CIDR networks, comma-separated)") from exc
        if self.trusted_proxies and not self.proxy_secret:
            raise ValueError("RATING_TRUSTED_PROXIES is set but RATING_PROXY_SECRET is not: a proxy's identity "
                             "header is believed only with the shared secret")

    @classmethod
    def from_settings(cls, registry: AnalystRegistry) -> "PageAuth":
        return cls(registry, trusted_proxies=settings.rating_trusted_proxies(),
                   proxy_secret=settings.rating_proxy_secret(), identity_header=settings.rating_identity_header(),
                   per_minute=settings.rating_rate_limit_per_minute())

    def _from_proxy(self, request: Request) -> bool:
        host = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if not any(address in network for network in self._networks):
            return False
        sent = request.headers.get(PROXY_SECRET_HEADER, "")
        return bool(self.proxy_secret) and hmac.compare_digest(sent.encode(), self.proxy_secret.encode())

    def identify(self, request: Request) -> Identity:
        """The request's analyst; `Refused` (401) when it has none or claims one it cannot prove."""
        claimed = request.headers.get(self.identity_header)
        if claimed is not None:
            if not self._from_proxy(request):
                raise Refused(401, f"{self.identity_header} is believed only from a trusted proxy with its secret")
            return Identity(claimed.strip(), "proxy")
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            analyst = self.registry.authenticate(authorization[7:].strip())
            if analyst is None:
                raise Refused(401, "unknown or revoked token")
            return Identity(analyst, "token", needs_csrf=False)
        analyst = self.registry.authenticate(request.cookies.get(SESSION_COOKIE))
        if analyst is None:
            raise Refused(401, "log in with your analyst token")
        return Identity(analyst, "token")

    def csrf_token(self, identity: Identity) -> str:
        return hmac.new(self._secret, f"{identity.method}:{identity.analyst}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, identity: Identity, sent: str | None) -> None:
        if identity.needs_csrf and not (sent and hmac.compare_digest(sent, self.csrf_token(identity))):
            raise Refused(403, "the form's CSRF token is missing or wrong: reload the page and send again")

    def take_slot(self, identity: Identity) -> None:
        """Count one rating; `Refused` (429) beyond `per_minute` in the last 60 s."""
        now = time.monotonic()
        with self._lock:
            sent = self._sent.setdefault(identity.analyst, deque())
            while sent and now - sent[0] > 60:
                sent.popleft()
            if len(sent) >= self.per_minute:
                raise Refused(429, f"{self.per_minute} ratings a minute at most: wait a little")
            sent.append(now)
