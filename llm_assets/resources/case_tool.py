"""`CaseToolResource`: opens tickets in the analysts' case tool through its REST API (Jira's shape).

`POST {base_url}/rest/api/2/issue` with `{"fields": {"project": {"key": ...}, "summary": ...,
"description": ..., "issuetype": {"name": ...}}}`; the answer's `id`, `key` and `self` identify
the ticket. Credentials: a user and an API token (HTTP Basic, Jira Cloud), or a token alone
(Bearer, a personal access token of Jira Data Center).

Off unless configured (`base_url` and `project` set): callers check `configured` first.
A 5xx, a 429, a 408 or a failed connection is retried with exponential backoff and jitter;
after the last attempt `CaseToolUnavailable` is raised. Another 4xx is the tool refusing this
ticket: `CaseToolRejected`, at once, so the caller can report it and go on with the others.
A request that timed out after it was sent is not retried: the ticket may exist.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

CREATE_ISSUE_PATH = "/rest/api/2/issue"
RETRIED_STATUSES = {408, 429}


class CaseToolError(RuntimeError):
    """The case tool did not open a ticket."""


class CaseToolRejected(CaseToolError):
    """The case tool refused the request (a 4xx): retrying the same request will not help."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status, self.body = status, body


class CaseToolUnavailable(CaseToolError):
    """The case tool did not answer, or answered 5xx, on every attempt."""


@dataclass(frozen=True)
class OpenedTicket:
    id: str
    key: str
    url: str
    attempts: int


class CaseToolResource(dg.ConfigurableResource):
    """The case tool at `base_url` (CASE_TOOL_URL); tickets go to project `project` (CASE_TOOL_PROJECT)."""

    base_url: str = Field(default="", description="CASE_TOOL_URL, e.g. https://cases.example.com; empty = off")
    user: str = Field(default="", description="CASE_TOOL_USER (with a token: HTTP Basic)")
    token: str = Field(default="", description="CASE_TOOL_TOKEN (alone: a Bearer token)")
    project: str = Field(default="", description="CASE_TOOL_PROJECT: the project key tickets are opened in")
    issue_type: str = Field(default="Task")
    timeout_s: float = Field(default=10.0, description="per request")
    max_attempts: int = Field(default=5, description="attempts per ticket on 5xx / connection errors")
    backoff_s: float = Field(default=0.5, description="first retry delay; doubles each attempt")
    max_backoff_s: float = Field(default=8.0)

    _client: httpx.Client | None = PrivateAttr(default=None)

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.project)

    def _http(self) -> httpx.Client:
        if self._client is None:
            headers = {"Accept": "application/json"}
            auth = None
            if self.user and self.token:
                auth = httpx.BasicAuth(self.user, self.token)
            elif self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._client = httpx.Client(base_url=self.base_url.rstrip("/"), headers=headers, auth=auth,
                                        timeout=self.timeout_s)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # jitter: parallel runs do not retry in step

    def create_issue(self, summary: str, description: str) -> OpenedTicket:
        """Open one ticket; raises `CaseToolRejected` (4xx) or `CaseToolUnavailable` (after retries)."""
        if not self.configured:
            raise CaseToolError("the case tool is not configured (CASE_TOOL_URL, CASE_TOOL_PROJECT)")
        body = {"fields": {"project": {"key": self.project}, "summary": summary, "description": description,
                           "issuetype": {"name": self.issue_type}}}
        last_problem = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._http().post(CREATE_ISSUE_PATH, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never sent: safe to retry
                last_problem = f"{type(exc).__name__}: {exc}"
            except httpx.TimeoutException as exc:
                raise CaseToolUnavailable(f"no answer within {self.timeout_s:g}s after the request was sent "
                                          f"(the ticket may exist; not retried): {exc}") from exc
            else:
                if response.status_code in (200, 201):
                    return self._opened(response, attempt)
                if response.status_code < 500 and response.status_code not in RETRIED_STATUSES:
                    raise CaseToolRejected(response.status_code, response.text)
                last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if attempt < self.max_attempts:
                time.sleep(self._delay(attempt))
        raise CaseToolUnavailable(f"{self.max_attempts} attempts failed, the last: {last_problem}")

    def _opened(self, response: httpx.Response, attempts: int) -> OpenedTicket:
        try:
            data: dict[str, Any] = response.json()
        except ValueError as exc:
            raise CaseToolUnavailable(f"the case tool answered {response.status_code} without JSON") from exc
        key = str(data.get("key") or data.get("id") or "")
        if not key:
            raise CaseToolUnavailable(f"the case tool's answer names no ticket: {response.text[:200]}")
        url = str(data.get("self") or f"{self.base_url.rstrip('/')}/browse/{key}")
        return OpenedTicket(id=str(data.get("id", "")), key=key, url=url, attempts=attempts)
