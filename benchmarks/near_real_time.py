"""Near real time: produce -> `enriched/cases` latency under a steady stream, through the real daemon.

Starts tansu, `milvus-lite server` and `dagster dev` (webserver + daemon, the repository's
`dagster.yaml`, a temporary `LLM_ASSETS_HOME`; `tests/e2e/stack.py`), builds the seed tables
with one run launched through GraphQL, then produces a steady stream of events (default 5
events/s for 5 minutes) to `events.raw` with a plain idempotent producer. `kafka_events_sensor`
ticks every 10 s (its `minimum_interval_seconds`) and each batch's run takes it from raw to
enriched (`ingest_events_job`, the hot path). Automation is switched off unless `--automation`
(then curated/enriched may also be requested by it, and evaluation/monitoring compete for CPU).

Prints:
- latency per event = `enriched_at` of its row - the time the producer sent it: p50 / p95 / max
  (goal: p95 <= 30 s on this machine), and the load average while it streamed (other work on
  the machine slows every phase);
- where that latency goes, per event (mean and at p95), from the run's event log: `sensor` (sent
  -> its run created: waiting for a tick to read it, including a tick spent waiting for the
  previous batch's run), `queue` (created -> dequeued), `start` (dequeued -> RUN_START: a new
  process, imports, the code location), `steps` (RUN_START -> `enriched_at`: ingest, checks,
  curation, enrichment up to the write);
- per sensor run, in order: the day's `enriched/cases` rows after it, cases the run enriched, its
  start overhead, the seconds of its ingest, curated and enriched steps and of the whole run
  (goal: flat as the day grows); and the sensor's tick durations.

Run: `.venv/bin/python -W ignore benchmarks/near_real_time.py [--rate 5 --seconds 300]`.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import polars as pl  # noqa: E402
import pytest  # noqa: E402  (MonkeyPatch: the environment of the stack, restored afterwards)

from llm_assets.asset_keys import ENRICHED_CASES  # noqa: E402
from llm_assets.dev.broker import start_broker  # noqa: E402
from llm_assets.resources.delta import DeltaLakeStorage  # noqa: E402
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data  # noqa: E402
from tests.e2e.stack import LOCATION, REPOSITORY, TERMINAL_STATUSES, DaemonStack, wait_for  # noqa: E402
from tests.e2e.test_daemon_flow import SEED_ASSETS, TEXTS  # noqa: E402

GOAL_P95_S = 30.0
RUN_QUERY = """query Run($runId: ID!) { runOrError(runId: $runId) { ... on Run {
  creationTime startTime endTime stepStats { stepKey startTime endTime } } } }"""
RUN_LOG_QUERY = """query Log($runId: ID!, $after: String) { logsForRun(runId: $runId, afterCursor: $after, limit: 1000) {
  ... on EventConnection { cursor hasMore events { __typename ... on MessageEvent { timestamp } } } } }"""
TICKS_QUERY = """query Ticks($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { sensorState { ticks(limit: 1000) { timestamp endTimestamp status } } } } }"""
STEPS = {"ingest": "ingest_kafka_batch", "curated": "curated__cases", "enriched": "enriched__cases"}
PHASES = ("sensor", "queue", "start", "steps")


def stream(bootstrap: str, topic: str, rate: float, seconds: float, sent: dict[str, float]) -> None:
    """`rate` events per second for `seconds`, one small produce per tick of 1/rate s; records send times."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    start, n = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) + 1
        while n < due:
            event_id = f"nrt-{n:06d}"
            now = datetime.now(timezone.utc)
            event = {"event_id": event_id, "source_system": "ledger", "event_ts": now.isoformat(),
                     "partner_id": f"P-00{n % 3 + 1}", "entity_id": f"ENT-{n % 500:05d}",
                     "payload_raw": TEXTS[n % len(TEXTS)].format(n=n, m=n % 3 + 1), "produced_at": now.isoformat()}
            producer.produce(topic, key=event_id.encode(), value=json.dumps(event).encode())
            sent[event_id] = now.timestamp()
            n += 1
        producer.poll(0)
        time.sleep(max(0.0, (n / rate) - (time.monotonic() - start)))
    producer.flush(30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_timeline(stack: DaemonStack, run_id: str) -> dict:
    """Epoch seconds of a run's milestones (created, dequeued, started, ended) and its step spans."""
    run = stack.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
    first: dict[str, float] = {}
    after = None
    while True:
        page = stack.graphql(RUN_LOG_QUERY, {"runId": run_id, "after": after})["logsForRun"]
        for event in page["events"]:
            first.setdefault(event["__typename"], int(event["timestamp"]) / 1000)
        if not page["hasMore"]:
            break
        after = page["cursor"]
    started = first.get("RunStartEvent", run["startTime"])
    return {"run_id": run_id, "created": run["creationTime"],
            "dequeued": first.get("RunDequeuedEvent", first.get("RunStartingEvent", run["creationTime"])),
            "started": started, "ended": run["endTime"],
            "steps": {name: s["endTime"] - s["startTime"] for s in run["stepStats"] for name, key in STEPS.items()
                      if s["stepKey"] == key and s["startTime"] and s["endTime"]}}


def sensor_runs(stack: DaemonStack) -> list[dict]:
    """Timelines of the sensor's runs, oldest first, with the day's `enriched/cases` row count after
    each and the cases each enriched."""
    counts = {r["runId"]: {"day_rows": 0, "cases_enriched": 0}
              for r in stack.runs(tags={"llm_assets/kafka_topic": stack.events_topic})}
    for m in stack.materializations(ENRICHED_CASES.to_user_string()):  # a range run materializes each date
        if m["runId"] in counts:
            meta = {e["label"]: e.get("intValue", e.get("floatValue")) for e in m["metadataEntries"]}
            seen = counts[m["runId"]]
            seen["day_rows"] = max(seen["day_rows"], meta.get("dagster/row_count") or 0)
            seen["cases_enriched"] += meta.get("cases_written") or 0
    timelines = [{**run_timeline(stack, run_id), **c} for run_id, c in counts.items()]
    return sorted(timelines, key=lambda t: t["created"])


def phases_of(sent_at: float, enriched_at: float, runs: list[dict]) -> dict[str, float] | None:
    """Split one event's latency at its run's milestones (its run: the last one started before `enriched_at`)."""
    started = [r for r in runs if r["started"] and r["started"] <= enriched_at]
    if not started:
        return None
    run = max(started, key=lambda r: r["started"])
    return {"sensor": run["created"] - sent_at, "queue": run["dequeued"] - run["created"],
            "start": run["started"] - run["dequeued"], "steps": enriched_at - run["started"]}


def tick_seconds(stack: DaemonStack, since: float) -> list[float]:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": "kafka_events_sensor"}
    ticks = stack.graphql(TICKS_QUERY, {"selector": selector})["sensorOrError"]["sensorState"]["ticks"]
    return [t["endTimestamp"] - t["timestamp"] for t in ticks if t["endTimestamp"] and t["timestamp"] >= since]


def sample_load(samples: list[float], stop: threading.Event) -> None:
    while not stop.wait(5):
        samples.append(os.getloadavg()[0])


def report(stack: DaemonStack, sent: dict[str, float], enriched: pl.DataFrame, since: float,
           load: list[float]) -> None:
    latencies = {row["event_id"]: row["enriched_at"].timestamp() - sent[row["event_id"]]
                 for row in enriched.select("event_id", "enriched_at").iter_rows(named=True)}
    values = list(latencies.values())
    p50, p95, worst = percentile(values, 0.5), percentile(values, 0.95), max(values)
    cores = os.cpu_count() or 1
    print(f"\n{len(values)} events, produce -> enriched_at latency: p50 {p50:.1f} s, p95 {p95:.1f} s, "
          f"max {worst:.1f} s (goal p95 <= {GOAL_P95_S:.0f} s: {p95 / GOAL_P95_S:.2f}x of budget)")
    if load:
        print(f"load average (1 min) while streaming, {cores} cores: mean {sum(load) / len(load):.1f}, "
              f"max {max(load):.1f}")

    runs = sensor_runs(stack)
    split = {}
    for row in enriched.select("event_id", "enriched_at").iter_rows(named=True):
        phases = phases_of(sent[row["event_id"]], row["enriched_at"].timestamp(), runs)
        if phases is not None:
            split[row["event_id"]] = phases
    if split:
        tail = [e for e in split if latencies[e] >= p95]
        print(f"\nwhere the latency goes (seconds; {len(split)} events placed in their run):")
        print("phase    " + "".join(f"{p:>9s}" for p in PHASES))
        for name, ids in (("mean", list(split)), ("at p95+", tail)):
            if not ids:
                continue
            print(f"{name:8s} " + "".join(f"{sum(split[e][p] for e in ids) / len(ids):9.1f}" for p in PHASES))

    all_runs = stack.runs(tags={"llm_assets/kafka_topic": stack.events_topic})
    print(f"\n{len(all_runs)} sensor runs ({sum(r['status'] == 'SUCCESS' for r in all_runs)} succeeded)")
    print("run  day_rows  cases  queue_s  start_s  ingest_s  curated_s  enrich_s  run_s")
    for i, r in enumerate(runs, 1):
        steps = r["steps"]
        print(f"{i:3d}  {r['day_rows']:8d}  {r['cases_enriched']:5d}  {r['dequeued'] - r['created']:7.1f}  "
              f"{r['started'] - r['dequeued']:7.1f}  {steps.get('ingest', 0):8.1f}  {steps.get('curated', 0):9.1f}  "
              f"{steps.get('enriched', 0):8.1f}  {(r['ended'] or r['started']) - r['started']:5.1f}")
    if len(runs) >= 4:
        half = len(runs) // 2
        first = sum(r["steps"].get("enriched", 0) for r in runs[:half]) / half
        last = sum(r["steps"].get("enriched", 0) for r in runs[half:]) / (len(runs) - half)
        print(f"\nenrichment step, mean seconds: first half of the runs {first:.1f}, second half {last:.1f} "
              f"(ratio {last / first:.2f}; goal: flat, ~1.0)")
    ticks = tick_seconds(stack, since)
    if ticks:
        print(f"sensor ticks: {len(ticks)}, seconds each: median {percentile(ticks, 0.5):.1f}, "
              f"max {max(ticks):.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=5.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to stream")
    parser.add_argument("--automation", action="store_true", help="keep the automation sensor running")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="near-real-time-") as tmp, pytest.MonkeyPatch.context() as env:
        broker = start_broker()
        stack = DaemonStack(Path(tmp) / "home", broker.bootstrap, "events.raw")
        try:
            stack.prepare(env)
            generate_sample_data(stack.home / "sample_data", n_events=30)
            t0 = time.monotonic()
            stack.start()
            if not args.automation:
                stack.stop_automation()
            seed = stack.wait_for_run(stack.launch_assets(SEED_ASSETS), 1800)  # minutes on a loaded machine
            assert seed["status"] == "SUCCESS", stack.failure(seed["runId"])
            print(f"stack up and seed tables built in {time.monotonic() - t0:.0f} s; streaming {args.rate:g} "
                  f"events/s for {args.seconds:g} s", flush=True)

            sent: dict[str, float] = {}
            load: list[float] = []
            stop_sampling = threading.Event()
            sampler = threading.Thread(target=sample_load, args=(load, stop_sampling), daemon=True)
            sampler.start()
            since = time.time()
            stream(stack.bootstrap, stack.events_topic, args.rate, args.seconds, sent)
            delta = DeltaLakeStorage(root=str(stack.home / "delta"))
            wait_for(lambda: delta.exists(ENRICHED_CASES) and set(sent) <= set(
                delta.scan(ENRICHED_CASES).select("event_id").collect()["event_id"].to_list()),
                600, "every event in enriched/cases", interval_s=2)
            stop_sampling.set()
            # Every run's events logged (its rows land before its publish, audit and checks).
            wait_for(lambda: all(r["status"] in TERMINAL_STATUSES
                                 for r in stack.runs(tags={"llm_assets/kafka_topic": stack.events_topic})),
                     600, "the sensor's runs to finish", interval_s=2)
            enriched = delta.read(ENRICHED_CASES).filter(pl.col("event_id").is_in(list(sent)))
            report(stack, sent, enriched, since, load)
            return 0
        finally:
            stack.close()
            broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
