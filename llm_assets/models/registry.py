"""The model registry: which LLM configurations exist as named, immutable model versions.

A registered model version names everything that decides an enriched case: the backend
(`server`: an OpenAI-compatible server such as vLLM or llama.cpp's `llama-server`; `offline`:
in-process vLLM; `local`: no LLM, the rules plus the embedding gate's classifier), where the
server is (`endpoint`: an environment variable name such as `LLM_BASE_URL`, or a URL), the model
id sent to it, the prompt versions of the skills and the generation parameters.

The registry is a reviewable YAML file in the repository (`llm_assets/models/registry.yaml`),
read by the `models/evaluation` partitions sensor, the assets and `llm-assets models ...`.
Versions are immutable: a name is bound to its content (`fingerprint`), the file may not hold
one name twice with different content, and `models/evaluation` and `models/production` refuse
a name whose content changed since it was evaluated. Changing a prompt, a parameter or the
model makes a new version (`name@v2`). The domain pack is part of a version's content
(`fingerprint`): a pack edited after an evaluation or a promotion is a new content under the same
name, evaluated and promoted again before it serves. Pure module: no Dagster import.
"""

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import yaml

from llm_assets import settings
from llm_assets.domain import current_pack
from llm_assets.llm.local_rules import LOCAL_RULES_VERSION, local_prompt_version
from llm_assets.resources.llm import BACKENDS
from llm_assets.llm.prompts import prompt_version, templates_for

DEFAULT_REGISTRY = Path(__file__).resolve().parent / "registry.yaml"
# A partition key of `model_versions` and a `model_version` prefix: no spaces, commas or slashes.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]*@[A-Za-z0-9._-]+$")
_FIELDS = ("name", "backend", "model", "endpoint", "call_mode", "prompt_versions", "temperature", "max_tokens",
           "description")


class RegistryError(ValueError):
    """The registry file is invalid, or a version's content changed (versions are immutable)."""


@dataclass(frozen=True)
class RegisteredModel:
    """One model version of the registry (see the module docstring)."""

    name: str                 # the registry name, e.g. "local-rules@v1"; rows' model_version starts with it
    backend: str              # "server" | "offline" | "local"
    model: str | None         # model id sent to the server / vLLM
    endpoint: str | None      # env var name (e.g. "LLM_BASE_URL") or a URL; None for local
    call_mode: str = "combined"
    prompt_versions: tuple[str, ...] = ()
    temperature: float = 0.0
    max_tokens: int = 512
    description: str = field(default="", compare=False)  # prose only: not part of the version's content

    @property
    def fingerprint(self) -> str:
        """sha256 of what decides the cases (every field but the description): the version's identity."""
        content = {k: v for k, v in asdict(self).items() if k != "description"}
        content["prompt_versions"] = list(self.prompt_versions)
        content["domain_pack"] = current_pack().fingerprint  # a taxonomy change is a new content
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    @property
    def uses_llm(self) -> bool:
        return self.backend != "local"


def expected_prompt_versions(backend: str, call_mode: str = "combined") -> tuple[str, ...]:
    """The prompt versions the code builds today for a backend and call mode."""
    if backend == "local":
        return (LOCAL_RULES_VERSION,)
    return tuple(t.id for t in templates_for(call_mode))


def row_prompt_version(model: RegisteredModel) -> str:
    """The `prompt_version` column of rows this version decides."""
    return local_prompt_version() if model.backend == "local" else prompt_version(model.call_mode)


def row_model_version(model: RegisteredModel, gate_version: str | None = None) -> str:
    """The `model_version` column of rows this version decides: the registry name, and for the local
    backend the gate it classified with (a new gate changes the local model's decisions)."""
    return f"{model.name}+gate:{gate_version or 'none'}" if model.backend == "local" else model.name


def parse_entry(raw: Mapping) -> RegisteredModel:
    """One registry entry (a mapping from the YAML file), validated."""
    unknown = set(raw) - set(_FIELDS)
    if unknown:
        raise RegistryError(f"registry entry {raw.get('name')!r}: unknown fields {sorted(unknown)}")
    name = str(raw.get("name") or "")
    if not _NAME.match(name):
        raise RegistryError(f"registry name {name!r} must look like `name@version` (letters, digits, . _ : + -)")
    backend = str(raw.get("backend") or "")
    if backend not in BACKENDS:
        raise RegistryError(f"{name}: backend must be one of {BACKENDS}, got {backend!r}")
    call_mode = str(raw.get("call_mode") or "combined")
    try:
        expected = expected_prompt_versions(backend, call_mode)
    except ValueError as exc:
        raise RegistryError(f"{name}: {exc}") from exc
    prompts = tuple(str(p) for p in (raw.get("prompt_versions") or expected))
    model = raw.get("model")
    endpoint = raw.get("endpoint")
    if backend == "local" and (model or endpoint):
        raise RegistryError(f"{name}: the local backend has no model id or endpoint")
    if backend != "local" and not model:
        raise RegistryError(f"{name}: backend {backend!r} needs a model id")
    if backend == "server" and not endpoint:
        raise RegistryError(f"{name}: backend 'server' needs an endpoint (an env var name or a URL)")
    max_tokens = int(raw.get("max_tokens", 512))
    temperature = float(raw.get("temperature", 0.0))
    if max_tokens < 1 or not 0.0 <= temperature <= 2.0:
        raise RegistryError(f"{name}: max_tokens must be >= 1 and temperature in [0, 2]")
    return RegisteredModel(name=name, backend=backend, model=str(model) if model else None,
                           endpoint=str(endpoint) if endpoint else None, call_mode=call_mode,
                           prompt_versions=prompts, temperature=temperature, max_tokens=max_tokens,
                           description=str(raw.get("description") or "").strip())


def parse_registry(document: Mapping | None) -> dict[str, RegisteredModel]:
    """The versions of a parsed registry document (`{"models": [entry, ...]}`), by name."""
    entries = (document or {}).get("models") or []
    if not isinstance(entries, list):
        raise RegistryError("the registry's `models` must be a list of entries")
    models: dict[str, RegisteredModel] = {}
    for raw in entries:
        model = parse_entry(raw)
        known = models.get(model.name)
        if known is not None and known.fingerprint != model.fingerprint:
            raise RegistryError(f"{model.name} is registered twice with different content: versions are immutable, "
                                f"register the change as a new version")
        models[model.name] = model
    return models


def load_registry(path: str | Path | None = None) -> dict[str, RegisteredModel]:
    """The registry file's versions by name (the repository's file when `path` is empty)."""
    path = Path(path) if path else DEFAULT_REGISTRY
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise RegistryError(f"no model registry at {path}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    return parse_registry(document)


def resolve_endpoint(model: RegisteredModel, environ: Mapping[str, str] | None = None) -> str | None:
    """The server URL of a version: a literal URL as it is, an env var name through `environ`
    (default: the process environment; None when unset or for the local and offline backends)."""
    endpoint = model.endpoint
    if not endpoint or model.backend != "server":
        return None
    if "://" in endpoint:
        return endpoint
    return (settings.environment() if environ is None else environ).get(endpoint) or None


def check_runnable(model: RegisteredModel) -> None:
    """Raise `RegistryError` when the code can no longer run this version as registered: its
    prompt versions are not the ones the code builds (a prompt changed: register a new version)."""
    expected = expected_prompt_versions(model.backend, model.call_mode)
    if tuple(model.prompt_versions) != expected:
        raise RegistryError(f"{model.name} is registered with prompts {list(model.prompt_versions)}, but the code "
                            f"builds {list(expected)}: versions are immutable, register a new version for the "
                            f"new prompts")


def check_unchanged(model: RegisteredModel, recorded_fingerprint: str | None) -> None:
    """Raise `RegistryError` when a version's content differs from what was recorded for its name."""
    if recorded_fingerprint and recorded_fingerprint != model.fingerprint:
        raise RegistryError(f"{model.name} changed since it was recorded (fingerprint {recorded_fingerprint[:12]} "
                            f"-> {model.fingerprint[:12]}): versions are immutable, register the change as a new "
                            f"version; if only the domain pack ({current_pack().version}) changed, evaluate and "
                            f"promote the version again under this pack")
