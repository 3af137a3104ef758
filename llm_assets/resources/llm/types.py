"""What the LLM transport speaks: `LLMRequest` in, `LLMAnswer` out, why an answer is missing
(`ERROR_KINDS`), the accepted backends, and `LLMServerUnavailable` (raised at setup). No I/O.

The bottom of `resources/llm/`: it imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("server", "offline", "local")  # accepted values of `backend`; `local` means no LLM
NOT_CONFIGURED = "none"

# Why a request got no answer.
ERROR_KINDS = (
    "timeout",        # no answer within request_timeout_s (after retries, or overload patience)
    "http_5xx",       # the server failed, or stayed overloaded (503) past the patience
    "http_429",       # the server shed load past the patience
    "http_4xx",       # the request was rejected (bad schema, auth): not retried
    "connect",        # the server could not be reached, or dropped the connection (after retries)
    "circuit_open",   # the breaker was open: failed fast, nothing sent
    "backend_error",  # the offline engine raised for the batch, or the client failed unexpectedly
)


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion to ask for. `json_schema` constrains decoding when set."""

    messages: list[dict]
    json_schema: dict | None = None
    schema_name: str = "answer"
    max_tokens: int | None = 512
    temperature: float | None = 0.0
    model: str | None = None  # None: the resource's model

    def response_format(self) -> dict | None:
        """The OpenAI / vLLM `response_format` for `json_schema` (strict)."""
        if self.json_schema is None:
            return None
        return {"type": "json_schema",
                "json_schema": {"name": self.schema_name, "schema": self.json_schema, "strict": True}}


@dataclass(frozen=True)
class LLMAnswer:
    """The answer to one request, or why there is none (`error_kind`), and what it cost."""

    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # time on the wire over all attempts (backoff excluded)
    attempts: int = 0       # requests sent, retries included
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None


class LLMServerUnavailable(RuntimeError):
    """The configured LLM server cannot serve: raised at resource setup, naming the URL."""
