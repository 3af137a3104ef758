"""Events an outside client produces reach `enriched/cases` and `cases.enriched` with nobody clicking.

The real webserver and daemon (`dagster dev`) run the code location against the session's
tansu broker, a `milvus-lite server` and a temporary `LLM_ASSETS_HOME`. Automation is
switched off once the code location is up: the seed tables (signals, exceptions, KB, gate)
are built by one run launched through GraphQL, and every curated and enriched row then
comes from the runs `kafka_events_sensor` requests, one per batch (the hot path). Five
batches, one of them with an event 20 days old (a run of its own, older than automation's
lookback) and one repeating an earlier event; the stack is stopped with SIGINT halfway and
started again, and the batch produced while it was down is picked up from the cursor.

After the restart automation is switched on while the sensor's runs are in flight (the
situation that once starved it for 10.7 minutes): its first tick must request runs (the
evaluation days automation was kept away from, among them an event two days old), and from
then on it runs beside the sensor without a case written or published twice.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from llm_assets.asset_keys import CURATED_CASES, ENRICHED_CASES, RAW_EVENTS
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
from llm_assets.settings import ENRICHED_TOPIC
from tests.conftest import unique_topic_name
from tests.e2e.stack import TERMINAL_STATUSES, DaemonStack, consume_all, produce, wait_for

pytestmark = pytest.mark.e2e

SEED_ASSETS = ["features/entity_signals", "signals/exceptions", "kb/documents", "kb/index", "models/embedding_gate"]
TEXTS = [
    "Settlement amount for order {n} differs from the partner statement by 12.40 EUR",
    "Card ending 4242 used from three countries within an hour on account {n}",
    "Ticket {n} was routed to the chargeback queue but concerns a refund",
    "Partner P-00{m} reported shipment {n} that our ledger has never seen",
    "Customer field missing in batch {n}; reprocess after the upstream fix",
]
BATCH_TIMEOUT_S = 240  # a batch's run on a loaded 2-core machine; generous on purpose
# The seed run (KB index, gate training, one process per step): about 2 minutes here, over 10 with
# the 2 cores shared with other suites (626 s measured at a load average of 25).
SEED_TIMEOUT_S = 1200


def _event(n: int, when: datetime) -> dict:
    return {"event_id": f"e2e-{n:03d}", "source_system": "ledger", "event_ts": when.isoformat(),
            "partner_id": f"P-00{n % 3 + 1}", "entity_id": f"ENT-{n:05d}",
            "payload_raw": TEXTS[n % len(TEXTS)].format(n=n, m=n % 3 + 1)}


def _ids(delta: DeltaLakeStorage, key) -> list[str]:
    return delta.read(key)["event_id"].to_list() if delta.exists(key) else []


def _sensor_runs_finished(stack: DaemonStack) -> list[dict]:
    return wait_for(lambda: (runs := stack.runs(tags={"llm_assets/kafka_topic": stack.events_topic}))
                    and all(run["status"] in TERMINAL_STATUSES for run in runs) and runs,
                    BATCH_TIMEOUT_S, "the sensor's runs to finish", interval_s=2)


@pytest.fixture
def stack(tmp_path, kafka_broker, monkeypatch):
    stack = DaemonStack(tmp_path / "home", kafka_broker, unique_topic_name("e2e-events"))
    try:
        stack.prepare(monkeypatch)
        generate_sample_data(tmp_path / "home" / "sample_data", n_events=30)  # the seed tables' sources
        yield stack
    finally:
        stack.close()


def test_events_from_an_outside_producer_reach_enriched_cases_and_the_topic_once_across_a_restart(stack):
    delta = DeltaLakeStorage(root=str(stack.home / "delta"))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    batches = [[_event(n, now - timedelta(minutes=n)) for n in range(b * 4, b * 4 + 4)] for b in range(5)]
    batches[1].append(_event(90, now - timedelta(days=20)))  # older than automation's 7-day lookback
    batches[1].append(_event(91, now - timedelta(days=2)))  # inside it: automation has work there after the restart
    batches[3].append(batches[0][0])  # a duplicate delivery of an event already enriched
    expected = {e["event_id"] for batch in batches for e in batch}

    started = time.monotonic()

    def phase(name: str) -> None:  # shown with -s or on failure: where the minutes go
        print(f"{time.monotonic() - started:6.1f} s  {name}", flush=True)

    stack.start()
    phase("code location up")
    stack.stop_automation()  # every curated and enriched row must come from the sensor's runs
    seed = stack.wait_for_run(stack.launch_assets(SEED_ASSETS), SEED_TIMEOUT_S)
    assert seed["status"] == "SUCCESS", stack.failure(seed["runId"])
    phase("seed tables built")

    def deliver(batch: list[dict]) -> None:
        produce(stack.bootstrap, stack.events_topic, batch)
        wanted = {e["event_id"] for e in batch}
        wait_for(lambda: wanted <= set(_ids(delta, ENRICHED_CASES)), BATCH_TIMEOUT_S,
                 f"{sorted(wanted)} in enriched/cases", interval_s=2)
        phase(f"batch of {len(batch)} enriched")

    deliver(batches[0])
    deliver(batches[1])

    # Restart between batches (after the runs ended: their rows land before the publish and the checks):
    # SIGINT, nothing may be left running, and the next batch arrives while the stack is down.
    _sensor_runs_finished(stack)
    assert stack.stop() == [], "processes needed SIGKILL after SIGINT"
    assert stack.dagster.leftovers() == []
    phase("stopped")
    produce(stack.bootstrap, stack.events_topic, batches[2])
    restarted = time.time()
    stack.start()
    stack.start_sensor("llm_assets_automation")

    def first_automation_tick():
        ticks = [t for t in stack.ticks("llm_assets_automation") if t["timestamp"] >= restarted]
        first = min(ticks, key=lambda t: t["timestamp"]) if ticks else None
        return first if first and first["status"] != "STARTED" else None

    tick = wait_for(first_automation_tick, BATCH_TIMEOUT_S, "automation's first tick after the restart")
    assert tick["status"] == "SUCCESS" and tick["runIds"], tick  # requested runs on its first tick
    phase(f"automation's first tick after the restart requested {len(tick['runIds'])} run(s)")
    wanted = {e["event_id"] for e in batches[2]}
    wait_for(lambda: wanted <= set(_ids(delta, ENRICHED_CASES)), BATCH_TIMEOUT_S, "the batch produced while down",
             interval_s=2)
    deliver(batches[3])
    deliver(batches[4])

    runs = _sensor_runs_finished(stack)
    assert {run["status"] for run in runs} == {"SUCCESS"}, [stack.failure(r["runId"]) for r in runs
                                                            if r["status"] != "SUCCESS"]
    assert {run["jobName"] for run in runs} == {"ingest_events_job"}
    assert len(runs) >= 6  # five batches, the late date in a run of its own

    # One run per batch carried it through: each sensor run materialized enriched/cases itself.
    enriched_by_run = {m["runId"] for m in stack.materializations(ENRICHED_CASES.to_user_string())}
    assert {run["runId"] for run in runs} <= enriched_by_run
    late_day = (now - timedelta(days=20)).date().isoformat()
    assert late_day in {m["partition"] for m in stack.materializations(ENRICHED_CASES.to_user_string())}

    for key in (RAW_EVENTS, CURATED_CASES, ENRICHED_CASES):
        counts = Counter(_ids(delta, key))
        assert set(counts) == expected and set(counts.values()) == {1}, (key, counts)
    enriched = delta.read(ENRICHED_CASES)
    assert enriched.filter(pl.col("event_id") == "e2e-090")["event_date"].to_list() == [late_day]

    published = Counter(v["event_id"] for v in consume_all(stack.bootstrap, ENRICHED_TOPIC)
                        if v["event_id"].startswith("e2e-"))
    assert set(published) == expected and set(published.values()) == {1}, published
