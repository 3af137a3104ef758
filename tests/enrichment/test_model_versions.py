"""The one function that names `model_version` and `prompt_version`, for every backend."""

import pytest

from llm_assets.domain import current_pack
from llm_assets.llm.llm_enricher import describe
from llm_assets.llm.model_versions import ModelDescription, ModelVersions, versions_for
from llm_assets.resources.llm import LLMResource

pytestmark = pytest.mark.unit


PACK = current_pack().version  # every prompt version names the domain pack that worded it


@pytest.mark.parametrize(("description", "expected"), [
    (ModelDescription("server", "qwen2.5-7b"), ModelVersions("vllm:qwen2.5-7b", f"enrich_case@v3+{PACK}")),
    (ModelDescription("server", "qwen2.5-7b", call_mode="per_skill", gate_version="g1"),
     ModelVersions("vllm:qwen2.5-7b", f"summarize@v3+classify@v3+propose_actions@v3+{PACK}")),
    (ModelDescription("offline", "qwen2.5-7b"), ModelVersions("offline:qwen2.5-7b", f"enrich_case@v3+{PACK}")),
    (ModelDescription("local", gate_version="gate-20261118-ab12"),
     ModelVersions("local-rules@v1+gate:gate-20261118-ab12", f"local-rules@v1+{PACK}")),
    (ModelDescription("local"), ModelVersions("local-rules@v1+gate:none", f"local-rules@v1+{PACK}")),
])
def test_every_backend_gets_its_model_and_prompt_version(description, expected):
    assert versions_for(description) == expected


def test_a_new_gate_is_a_new_local_model_but_not_a_new_server_model():
    local = [versions_for(ModelDescription("local", gate_version=g)).model_version for g in ("g1", "g2")]
    server = [versions_for(ModelDescription("server", "m", gate_version=g)).model_version for g in ("g1", "g2")]
    assert local[0] != local[1] and server[0] == server[1]


def test_a_description_that_cannot_be_named_is_refused():
    with pytest.raises(ValueError, match="one of"):
        versions_for(ModelDescription("cloud", "m"))
    with pytest.raises(ValueError, match="model id"):
        versions_for(ModelDescription("server"))
    with pytest.raises(ValueError, match="call_mode"):
        versions_for(ModelDescription("server", "m", call_mode="all_at_once"))


def test_the_transport_is_described_by_what_it_is_configured_for():
    assert describe(LLMResource(), gate_version="g1") == ModelDescription("local", None, "combined", "g1")
    assert describe(LLMResource(backend="offline", model="m"), call_mode="per_skill") == ModelDescription(
        "offline", "m", "per_skill", None)
    assert describe(LLMResource(base_url="http://vllm:8000/v1", model="m")).backend == "server"
