"""`llm-assets models list` and `add-partition` on a test instance and an empty lake."""

import dagster as dg
import pytest

from llm_assets.cli import main
from llm_assets.models import commands
from llm_assets.partitions import model_versions
from tests.models.conftest import BAD, GOOD, write_registry

pytestmark = pytest.mark.unit


def test_add_partition_and_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path / "home"))
    registry = write_registry(tmp_path / "registry.yaml", "http://127.0.0.1:9/v1")
    with dg.instance_for_test() as instance:
        assert commands.add_partition(GOOD, str(registry), instance=instance) == 0
        assert commands.add_partition("unknown@v1", str(registry), instance=instance) == 1
        assert instance.get_dynamic_partitions(model_versions.name) == [GOOD]
        assert commands.list_versions(str(registry), instance=instance) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    # ... endpoint "(set)", partition, check; nothing serves yet (the production column is empty).
    assert lines[GOOD][-3:] == ["(set)", "yes", "-"] and lines[BAD][-3:] == ["(set)", "no", "-"]
    assert lines["local-rules@v1"][1] == "local"


def test_a_broken_registry_is_reported_not_raised(tmp_path, capsys):
    broken = tmp_path / "registry.yaml"
    broken.write_text("models:\n  - {name: x@v1, backend: gpu}\n")
    assert main(["models", "--registry", str(broken), "add-partition", "x@v1"]) == 2
    assert "registry error" in capsys.readouterr().out
