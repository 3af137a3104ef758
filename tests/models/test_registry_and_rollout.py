"""The registry file, its immutability rules, the llama.cpp example entry against the test server,
and the rollout rule."""

import json

import numpy as np
import pytest

from llm_assets.llm import pipeline
from llm_assets.llm.llm_enricher import LLMEnricher
from llm_assets.models import production
from llm_assets.models.assets import transport_for
from llm_assets.models.evaluation import RecordingLLM, case_rows, run_golden, summarize
from llm_assets.models.golden import golden_fingerprint, golden_frame
from llm_assets.models.registry import (
    DEFAULT_REGISTRY,
    RegistryError,
    check_runnable,
    check_unchanged,
    load_registry,
    parse_registry,
    resolve_endpoint,
    row_model_version,
)
from llm_assets.resources.llm import LLMResource
from tests.support.openai_test_server import OpenAITestServer

pytestmark = pytest.mark.integration

LLAMA_CPP = "llama-cpp-qwen2.5-0.5b@v3"


def test_the_repository_registry_loads_and_every_version_runs_with_todays_prompts():
    registry = load_registry()
    assert {"local-rules@v1", LLAMA_CPP} <= set(registry)
    assert registry["local-rules@v1"].backend == "local" and not registry["local-rules@v1"].uses_llm
    for model in registry.values():
        check_runnable(model)


def test_one_name_with_two_contents_is_refused():
    entry = {"name": "m@v1", "backend": "server", "endpoint": "LLM_BASE_URL", "model": "a"}
    assert len(parse_registry({"models": [entry, dict(entry)]})) == 1  # the same entry twice is harmless
    with pytest.raises(RegistryError, match="immutable"):
        parse_registry({"models": [entry, {**entry, "temperature": 0.7}]})


def test_a_changed_prompt_or_content_needs_a_new_version():
    model = parse_registry({"models": [{"name": "m@v1", "backend": "server", "endpoint": "X", "model": "a",
                                        "prompt_versions": ["enrich_case@v0"]}]})["m@v1"]
    with pytest.raises(RegistryError, match="register a new version"):
        check_runnable(model)
    current = parse_registry({"models": [{"name": "m@v1", "backend": "server", "endpoint": "X", "model": "a"}]})["m@v1"]
    check_unchanged(current, current.fingerprint)
    with pytest.raises(RegistryError, match="immutable"):
        check_unchanged(current, model.fingerprint)


@pytest.mark.parametrize("entry, error", [
    ({"name": "no-version", "backend": "local"}, "name@version"),
    ({"name": "x@v1", "backend": "gpu"}, "backend"),
    ({"name": "x@v1", "backend": "server", "model": "m"}, "endpoint"),
    ({"name": "x@v1", "backend": "local", "endpoint": "LLM_BASE_URL"}, "local backend"),
    ({"name": "x@v1", "backend": "server", "endpoint": "E", "model": "m", "temprature": 0.1}, "unknown fields"),
])
def test_invalid_entries_are_refused(entry, error):
    with pytest.raises(RegistryError, match=error):
        parse_registry({"models": [entry]})


def test_endpoints_resolve_from_an_env_var_name_or_a_url():
    registry = load_registry()
    llama = registry[LLAMA_CPP]
    assert resolve_endpoint(llama, {}) is None
    assert resolve_endpoint(llama, {"LLAMA_CPP_BASE_URL": "http://127.0.0.1:8080/v1"}) == "http://127.0.0.1:8080/v1"
    literal = parse_registry({"models": [{"name": "x@v1", "backend": "server", "endpoint": "http://h:1/v1",
                                          "model": "m"}]})["x@v1"]
    assert resolve_endpoint(literal, {}) == "http://h:1/v1"
    assert resolve_endpoint(registry["local-rules@v1"], {"LLM_BASE_URL": "http://x"}) is None
    assert row_model_version(registry["local-rules@v1"], "g1") == "local-rules@v1+gate:g1"
    assert row_model_version(llama, "g1") == LLAMA_CPP


def test_the_llama_cpp_example_entry_speaks_to_an_openai_compatible_server(monkeypatch):
    # The repository's example entry, unchanged, pointed at the test server through its env var:
    # the requests carry its model id, structured outputs and generation parameters, and the answers parse.
    llama = load_registry()[LLAMA_CPP]
    golden = golden_frame(n=12)
    with OpenAITestServer(slots=4, model=llama.model) as server:
        monkeypatch.setenv(llama.endpoint, f"{server.base_url}/v1")
        transport = transport_for(llama, LLMResource(max_concurrency=4))
        recorder = RecordingLLM(LLMEnricher(transport, call_mode=llama.call_mode, max_tokens=llama.max_tokens,
                                            temperature=llama.temperature))
        versions = pipeline.Versions(llama.name, "+".join(llama.prompt_versions), "none")
        result = run_golden(golden, model=llama, versions=versions, retrieve=lambda v: [[] for _ in range(len(v))],
                            embed=lambda texts: np.zeros((len(texts), 8), dtype=np.float32), llm=recorder)
        bodies = [r["body"] for r in server.chat_requests]

    assert len(bodies) == golden.height
    for body in bodies:
        assert body["model"] == llama.model
        assert body["response_format"]["type"] == "json_schema"
        assert body["max_tokens"] == llama.max_tokens and body["temperature"] == llama.temperature
    rows = case_rows(golden, result, llama, golden_sha256=golden_fingerprint(golden), run_id="test")
    summary = summarize(rows)
    assert summary["valid_json_rate"] == 1.0 and summary["llm_calls_per_case"] == 1.0
    assert set(rows["enriched_model_version"].to_list()) == {LLAMA_CPP}
    assert json.loads(rows["actions"][0])  # parsed actions from the structured answer


def test_a_25_percent_rollout_picks_a_quarter_of_the_cases_the_same_ones_every_time():
    ids = [f"evt-{i:06d}" for i in range(4000)]
    chosen = [i for i in ids if production.serves_new_version(i, 0.25)]
    assert 0.22 <= len(chosen) / len(ids) <= 0.28
    assert chosen == [i for i in ids if production.serves_new_version(i, 0.25)]
    # Monotone: the cases of 5% stay in 25%; 0 and 1 are none and all.
    assert {i for i in ids if production.serves_new_version(i, 0.05)} <= set(chosen)
    assert not any(production.serves_new_version(i, 0.0) for i in ids[:100])
    assert all(production.serves_new_version(i, 1.0) for i in ids[:100])


def test_raising_the_share_keeps_the_previous_version_and_a_new_version_rolls_out_over_the_current():
    first = production.next_state(production.NOTHING_PROMOTED, "a@v1", 1.0)
    assert (first.version, first.previous_version) == ("a@v1", None)
    canary = production.next_state(first, "b@v1", 0.05)
    wider = production.next_state(canary, "b@v1", 0.25)
    assert (wider.version, wider.previous_version, wider.rollout_share) == ("b@v1", "a@v1", 0.25)
    assert {wider.version_for(f"e{i}") for i in range(200)} == {"a@v1", "b@v1"}
    with pytest.raises(ValueError):
        production.next_state(first, "b@v1", 0.0)


def test_the_default_registry_path_is_the_file_in_the_package():
    assert DEFAULT_REGISTRY.name == "registry.yaml" and DEFAULT_REGISTRY.parent.name == "models"
