"""A micro-batch run killed (SIGKILL) at any point of the hot path, or a Milvus server that dies,
loses nothing and doubles nothing, with no one re-executing by hand.

The real webserver and daemon (`dagster dev`) run the code location against the session's tansu
broker and a `milvus-lite server`, with the repository's `dagster.yaml`: run monitoring finds the
dead run process (`llm_assets/dev/run_launcher.py`), run retries re-execute the run from the
failed step, and the next run of the date finishes the enriched outbox (audit, publish). For each
fail point (`llm_assets/failpoints.py`) an outside producer sends a batch, the point kills the
run that reaches it, and the test waits until every event is in `raw/events`, `curated/cases`,
`enriched/cases`, on `cases.enriched` and in a recorded audit bundle. Then the Milvus server is
killed while a batch is produced and started again 20 s later. At the end: every event exactly
once in every layer, on the topic and in one verifying bundle; `verify-audit` passes. The time
each recovery took is printed (`-s`) and written to `$LLM_ASSETS_TEST_ARTIFACTS/crash_recovery.json`.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from llm_assets import failpoints
from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, ENRICHED_OUTBOX, RAW_EVENTS
from llm_assets.dev.milvus import start_milvus_server
from llm_assets.enrichment import audit, audit_verification
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.signing import load_signing_key
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
from llm_assets.settings import ENRICHED_TOPIC
from tests.conftest import unique_topic_name
from tests.e2e.stack import TERMINAL_STATUSES, DaemonStack, consume_all, produce, wait_for

pytestmark = pytest.mark.e2e

SEEDS = ["features/entity_signals", "signals/exceptions"]  # no KB or gate: the local strategy decides
RECOVERY_TIMEOUT_S = 300  # detection (5 s polls) + a retry run, on a loaded 2-core machine; generous
PER_BATCH = 4


@pytest.fixture
def stack(tmp_path, kafka_broker, monkeypatch):
    points = tmp_path / "failpoints"
    points.mkdir()
    stack = DaemonStack(tmp_path / "home", kafka_broker, unique_topic_name("crash-events"),
                        extra_env={failpoints.FAILPOINTS_VARIABLE: str(points)})
    stack.points = points
    try:
        stack.prepare(monkeypatch)
        generate_sample_data(tmp_path / "home" / "sample_data", n_events=30)
        yield stack
    finally:
        stack.close()


def _event(tag: str, n: int, when: datetime) -> dict:
    return {"event_id": f"crash-{tag}-{n}", "source_system": "ledger", "event_ts": when.isoformat(),
            "partner_id": f"P-00{n % 3 + 1}", "entity_id": f"ENT-{n:05d}",
            "payload_raw": f"Settlement amount for order {tag}-{n} differs from the partner statement"}


def _ids(delta: DeltaLakeStorage, key) -> Counter:
    return Counter(delta.read(key)["event_id"].to_list()) if delta.exists(key) else Counter()


def _published_in_ledger(delta: DeltaLakeStorage) -> set[str]:
    if not delta.exists(ENRICHED_OUTBOX):
        return set()
    return set(delta.read(ENRICHED_OUTBOX).filter(pl.col("state") == "published")["event_id"].to_list())


def test_kill_9_anywhere_on_the_hot_path_or_a_milvus_outage_loses_and_doubles_nothing(stack):
    delta = DeltaLakeStorage(root=str(stack.home / "delta"))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    timings: dict[str, float] = {}
    expected: set[str] = set()

    stack.start()
    stack.stop_automation()  # every curated and enriched row comes from the sensor's runs (and their retries)
    seed = stack.wait_for_run(stack.launch_assets(SEEDS), RECOVERY_TIMEOUT_S)
    assert seed["status"] == "SUCCESS", stack.failure(seed["runId"])

    def deliver(tag: str, *, before_wait=None) -> None:
        batch = [_event(tag, n, now - timedelta(minutes=n)) for n in range(PER_BATCH)]
        wanted = {e["event_id"] for e in batch}
        expected.update(wanted)
        sent_at = produce(stack.bootstrap, stack.events_topic, batch)
        if before_wait is not None:
            before_wait()
        wait_for(lambda: wanted <= _published_in_ledger(delta), RECOVERY_TIMEOUT_S,
                 f"{tag}: every event enriched and published", interval_s=1)
        timings[tag] = round(time.time() - sent_at, 1)
        print(f"{tag}: produce -> published {timings[tag]} s", flush=True)

    deliver("baseline")
    for point in failpoints.HOT_PATH:
        armed = failpoints.arm(stack.points, point)
        deliver(point)
        assert not armed.exists(), f"no run reached {point}"
    runs = wait_for(lambda: (found := stack.runs(tags={"llm_assets/kafka_topic": stack.events_topic}))
                    and all(r["status"] in TERMINAL_STATUSES for r in found) and found,
                    RECOVERY_TIMEOUT_S, "the sensor's runs and their retries to end", interval_s=2)
    killed = [r for r in runs if r["status"] == "FAILURE"]
    assert len(killed) == len(failpoints.HOT_PATH), "each fail point should have killed one run"
    retried = {t["value"]: r["status"] for r in runs for t in r["tags"] if t["key"] == "dagster/parent_run_id"}
    assert {r["runId"] for r in killed} <= set(retried), "a killed run was not retried by Dagster"
    assert set(retried.values()) == {"SUCCESS"}

    # Milvus dies while a batch is on its way, and comes back 20 s later (as `make dev` restarts it).
    milvus = stack.milvus
    milvus.process.kill()
    restarted = []
    later = threading.Timer(20.0, lambda: restarted.append(start_milvus_server(milvus.data_dir, port=milvus.port)))
    later.start()
    try:
        deliver("milvus-outage")
    finally:
        later.join()
        stack.milvus = restarted[0] if restarted else stack.milvus

    runs = wait_for(lambda: (found := stack.runs(tags={"llm_assets/kafka_topic": stack.events_topic}))
                    and all(r["status"] in TERMINAL_STATUSES for r in found) and found,
                    RECOVERY_TIMEOUT_S, "every run to end", interval_s=2)
    assert len([r for r in runs if r["status"] == "FAILURE"]) == len(killed), "the Milvus outage failed a run"
    for key in (RAW_EVENTS, CURATED_CASES, ENRICHED_CASES):
        counts = _ids(delta, key)
        assert set(counts) == expected and set(counts.values()) == {1}, (key, counts)
    published = Counter(v["event_id"] for v in consume_all(stack.bootstrap, ENRICHED_TOPIC)
                        if v["event_id"].startswith("crash-"))
    assert set(published) == expected and set(published.values()) == {1}, published

    artifacts = ArtifactStore(root=str(stack.home / "artifacts"))
    key = load_signing_key(None, stack.home / "audit" / "signing.key", create=False).key
    bundled: Counter = Counter()
    for path in artifacts.list(audit.AUDIT_PREFIX):
        result = audit.verify_bundle(artifacts.read_bytes(path), key)
        assert result.ok, f"{path}: {result.reason}"
        bundled.update(result.event_ids)
    assert bundled == Counter(expected), "every case in exactly one verifying bundle"
    report = io.StringIO()
    assert audit_verification.verify_command(str(stack.home / "artifacts"), env={},
                                             key_file=stack.home / "audit" / "signing.key", out=report,
                                             delta_root=str(stack.home / "delta")) == 0, report.getvalue()

    out = Path(os.environ.get("LLM_ASSETS_TEST_ARTIFACTS", "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "crash_recovery.json").write_text(json.dumps(timings, indent=2))
