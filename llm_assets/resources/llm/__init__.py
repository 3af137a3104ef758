"""The transport to an LLM: a request in, an answer out; nothing about cases.

- `server`: an OpenAI-compatible server (vLLM) over async httpx; every request carries its JSON
  schema as `response_format` (`server.py`).
- `offline`: in-process `vllm.LLM.chat` with `StructuredOutputsParams`, for large backfills on a
  GPU node; requests sent together are answered by one engine call (`offline.py`).
- no base URL and backend not `offline` (or `backend="local"`): not configured. `configured` is
  False and `resolved_backend()` is `none`; the enrichment domain then uses its local strategy.

Against a slow or saturated server the transport backs off instead of failing: adaptive
concurrency, retries with jittered backoff, a circuit breaker for a server that is down
(`resilience.py`, used by `server.py`). `LLMResource.complete` returns exactly one `LLMAnswer`
per request, in order, and never raises for a request: a request that cannot be answered comes
back with an `error_kind`. Nothing here imports the domain packages: prompts, parsing, re-asking
and versions belong to `llm/` and `enrichment/`.

Modules, bottom first (each imports only those before it): `types` (requests, answers, error
kinds), `resilience` (breaker, backoff, adaptive concurrency), `bridge` (`run_blocking`),
`server`, `offline`, `resource` (`LLMResource`).
"""

from llm_assets.resources.llm.bridge import run_blocking
from llm_assets.resources.llm.offline import OfflineSession
from llm_assets.resources.llm.resilience import AdaptiveConcurrency, CircuitBreaker
from llm_assets.resources.llm.resource import LLMResource
from llm_assets.resources.llm.types import (BACKENDS, ERROR_KINDS, NOT_CONFIGURED, LLMAnswer, LLMRequest,
                                            LLMServerUnavailable)

__all__ = [
    "BACKENDS", "ERROR_KINDS", "NOT_CONFIGURED", "AdaptiveConcurrency", "CircuitBreaker", "LLMAnswer", "LLMRequest",
    "LLMResource", "LLMServerUnavailable", "OfflineSession", "run_blocking",
]
