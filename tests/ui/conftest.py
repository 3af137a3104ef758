"""The code location under a running webserver and daemon, seeded once for the UI tests.

One stack for the whole package, shared by the backfill and browser tests (`dagster dev` via
`tests/e2e/stack.py`, a `milvus-lite server`, the session's tansu broker, a temporary
`LLM_ASSETS_HOME`): raw events of three sample days are written straight to Delta, the seed tables (signals, exceptions, KB, gate) are built by one run
launched through GraphQL, and automation is switched off so only the tests launch runs.
"""

from __future__ import annotations

import pytest

from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
from tests.conftest import unique_topic_name
from tests.e2e.stack import DaemonStack
from tests.support.pipeline import write_raw_events

SEED_ASSETS = ["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index", "models/embedding_gate"]
SEED_TIMEOUT_S = 420  # the embedding model and the index on a loaded 2-core machine


@pytest.fixture(scope="package")  # seeding takes minutes: once for every test module here
def ui_stack(tmp_path_factory, kafka_broker):
    """A seeded, running stack; yields `(stack, raw rows per event_date)`."""
    home = tmp_path_factory.mktemp("ui") / "home"
    stack = DaemonStack(home, kafka_broker, unique_topic_name("ui-events"))
    with pytest.MonkeyPatch.context() as env:
        try:
            stack.prepare(env)
            generate_sample_data(home / "sample_data", n_events=90)  # three days, 2026-11-18 .. 20
            raw_per_day = write_raw_events(DeltaLakeStorage(root=str(home / "delta")), home / "sample_data")
            stack.start()
            stack.stop_automation()
            if stack.sensor("kafka_events_sensor")["sensorState"]["status"] == "RUNNING":
                stack.stop_sensor("kafka_events_sensor")
            seed = stack.wait_for_run(stack.launch_assets(SEED_ASSETS), SEED_TIMEOUT_S)
            assert seed["status"] == "SUCCESS", stack.failure(seed["runId"])
            yield stack, raw_per_day
        finally:
            stack.stop()
            stack.close()

