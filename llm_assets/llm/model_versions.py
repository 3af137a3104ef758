"""The one place that names model and prompt versions, for every backend.

`enriched/cases` records `model_version` and `prompt_version` on every row and keys the result
cache on them; a model registry builds on `versions_for`. A backend is described by a small
`ModelDescription` (what decides the cases), and `versions_for` turns it into both versions:

| backend | model_version | prompt_version |
|---|---|---|
| `server` (vLLM's OpenAI-compatible API) | `vllm:<model>` | the prompt templates used and the domain pack, e.g. `enrich_case@v3+payments_ops@1a2b3c4d` |
| `offline` (in-process vLLM) | `offline:<model>` | same as the server |
| `local` (no LLM: rules + the gate's classifier) | `local-rules@v1+gate:<gate_version or none>` | `local-rules@v1+<pack version>` |

The local backend's "model" is the rules plus the gate's classifier, so a new gate is a new
model version (and invalidates the cached local decisions). Pure module: no Dagster import.
"""

from dataclasses import dataclass

from llm_assets.llm.local_rules import LOCAL_RULES_VERSION, local_prompt_version
from llm_assets.llm.prompts import prompt_version
from llm_assets.resources.llm import BACKENDS


@dataclass(frozen=True)
class ModelDescription:
    """What decides the cases: the backend, its model id, the prompts' call mode, the gate."""

    backend: str
    model: str | None = None
    call_mode: str = "combined"
    gate_version: str | None = None


@dataclass(frozen=True)
class ModelVersions:
    model_version: str
    prompt_version: str


def versions_for(description: ModelDescription) -> ModelVersions:
    """`model_version` and `prompt_version` of a described backend (table in the module docstring)."""
    backend = description.backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "local":
        return ModelVersions(f"{LOCAL_RULES_VERSION}+gate:{description.gate_version or 'none'}", local_prompt_version())
    if not description.model:
        raise ValueError(f"backend {backend!r} needs a model id to name its version")
    prefix = "vllm" if backend == "server" else "offline"
    return ModelVersions(f"{prefix}:{description.model}", prompt_version(description.call_mode))
