"""Concurrency limits that hold: the LLM and Milvus work run in Dagster pools limited by `dagster.yaml`.

The old limit matched a run tag no run carried (it was an op tag), and four enrichment runs
ran at once; pools match the steps themselves.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from llm_assets.asset_keys import ENRICHED_CASES, KB_INDEX

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_DAGSTER_YAML = REPO_ROOT / "dagster.yaml"


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    """A DAGSTER_HOME with the repository's dagster.yaml (what `make dev` / `make demo` copy)."""
    shutil.copy(REPO_DAGSTER_YAML, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


def test_dagster_yaml_limits_pools_and_runs_in_the_current_form(dagster_home):
    assert "llm_assets/stage" not in REPO_DAGSTER_YAML.read_text()  # the dead limit on an op tag is gone
    with dg.DagsterInstance.get() as instance:
        config = instance.get_concurrency_config()
        assert config.run_queue_config.max_concurrent_runs == 4
        # The one run-tag limit is on a tag sensor runs really carry: micro-batches one at a time.
        assert config.run_queue_config.tag_concurrency_limits == [
            {"key": "dagster/sensor_name", "value": "kafka_events_sensor", "limit": 1}]
        assert (config.pool_config.default_pool_limit, config.pool_config.pool_granularity.value) == (1, "op")
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_llm_and_milvus_work_declare_their_pools(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    from llm_assets.definitions import defs

    assert defs.get_assets_def(ENRICHED_CASES).op.pool == "llm"
    assert defs.get_assets_def(KB_INDEX).op.pool == "milvus"


def test_two_runs_in_the_llm_pool_never_run_their_steps_at_once(dagster_home, tmp_path):
    with dg.DagsterInstance.get():  # create the storage once, before two processes race to
        pass
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "POOL_TEST_MARKERS": str(markers)}
    def launch() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tests.support.pool_runs"], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # The second run starts once the first holds the slot: two runs registering on the pool in the
    # same instant can both be assigned the one slot (Dagster's check-then-assign race), and the
    # loser then spins claiming a slot it was assigned instead of waiting in the queue.
    launched = [launch()]
    deadline = time.monotonic() + 300
    while not (markers / "first").exists():
        assert launched[0].poll() is None and time.monotonic() < deadline, launched[0].communicate()[1][-2000:]
        time.sleep(0.1)
    launched.append(launch())
    outputs = [p.communicate(timeout=560) for p in launched]
    assert [p.returncode for p in launched] == [0, 0], [err[-2000:] for _, err in outputs]

    with dg.DagsterInstance.get() as instance:
        runs = {out.strip().splitlines()[-1] for out, _ in outputs}  # each process prints its run id
        records = instance.fetch_materializations(dg.AssetKey("llm_work"), limit=10).records
        by_run = {r.run_id: r.asset_materialization.metadata for r in records}
        assert set(by_run) == set(runs)
        (first,) = [run for run, md in by_run.items() if md["first"].value]
        (second,) = set(runs) - {first}
        assert by_run[first]["saw_other_run_waiting"].value, "the other run's step did not wait for the pool"

        def at(run_id, event_type):
            (record,) = instance.get_records_for_run(run_id, of_type=event_type).records
            return record.timestamp

        # The second step started only once the first had finished: never both at once.
        assert at(first, dg.DagsterEventType.STEP_SUCCESS) <= at(second, dg.DagsterEventType.STEP_START)
