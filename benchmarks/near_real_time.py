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
  (goal: p95 <= 30 s on this machine);
- per sensor run, in order: the day's `enriched/cases` rows after it, cases the run enriched and
  the seconds of its `enriched__cases` step and of the whole run (goal: flat as the day grows).

Run: `.venv/bin/python -W ignore benchmarks/near_real_time.py [--rate 5 --seconds 300]`.
"""

import argparse
import json
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
from llm_assets.sample_data.generator import generate_sample_data  # noqa: E402
from tests.e2e.stack import DaemonStack, produce, wait_for  # noqa: E402
from tests.e2e.test_daemon_flow import SEED_ASSETS, TEXTS  # noqa: E402

GOAL_P95_S = 30.0
STEP_STATS_QUERY = """query Steps($runId: ID!) { runOrError(runId: $runId) { ... on Run {
  startTime endTime stepStats { stepKey startTime endTime } } } }"""


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


def per_run_costs(stack: DaemonStack) -> list[dict]:
    """Per sensor run with an `enriched/cases` materialization: day rows, cases enriched, seconds."""
    runs = {r["runId"]: r for r in stack.runs(tags={"llm_assets/kafka_topic": stack.events_topic})}
    rows = []
    for m in stack.materializations(ENRICHED_CASES.to_user_string()):
        if m["runId"] not in runs:
            continue
        meta = {e["label"]: e.get("intValue", e.get("floatValue")) for e in m["metadataEntries"]}
        stats = stack.graphql(STEP_STATS_QUERY, {"runId": m["runId"]})["runOrError"]
        step = next((s for s in stats["stepStats"] if s["stepKey"] == "enriched__cases"), None)
        rows.append({"started": stats["startTime"], "partition": m["partition"],
                     "day_rows": meta.get("dagster/row_count"), "cases_enriched": meta.get("cases_written"),
                     "enrich_step_s": round(step["endTime"] - step["startTime"], 1) if step else None,
                     "run_s": round(stats["endTime"] - stats["startTime"], 1)})
    return sorted(rows, key=lambda r: r["started"])


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
                stack.stop_sensor("llm_assets_automation")
            seed = stack.wait_for_run(stack.launch_assets(SEED_ASSETS), 600)
            assert seed["status"] == "SUCCESS", stack.failure(seed["runId"])
            print(f"stack up and seed tables built in {time.monotonic() - t0:.0f} s; streaming {args.rate:g} "
                  f"events/s for {args.seconds:g} s", flush=True)

            sent: dict[str, float] = {}
            stream(stack.bootstrap, stack.events_topic, args.rate, args.seconds, sent)
            delta = DeltaLakeStorage(root=str(stack.home / "delta"))
            wait_for(lambda: delta.exists(ENRICHED_CASES) and set(sent) <= set(
                delta.scan(ENRICHED_CASES).select("event_id").collect()["event_id"].to_list()),
                600, "every event in enriched/cases", interval_s=2)
            enriched = delta.read(ENRICHED_CASES).filter(pl.col("event_id").is_in(list(sent)))
            latencies = [row["enriched_at"].timestamp() - sent[row["event_id"]]
                         for row in enriched.select("event_id", "enriched_at").iter_rows(named=True)]
            p50, p95, worst = percentile(latencies, 0.5), percentile(latencies, 0.95), max(latencies)
            print(f"\n{len(latencies)} events, produce -> enriched_at latency: p50 {p50:.1f} s, p95 {p95:.1f} s, "
                  f"max {worst:.1f} s (goal p95 <= {GOAL_P95_S:.0f} s: {p95 / GOAL_P95_S:.2f}x of budget)")

            runs = stack.runs(tags={"llm_assets/kafka_topic": stack.events_topic})
            costs = per_run_costs(stack)
            print(f"{len(runs)} sensor runs ({sum(r['status'] == 'SUCCESS' for r in runs)} succeeded)\n")
            print("run  day_rows  cases_enriched  enrich_step_s  run_s")
            for i, c in enumerate(costs, 1):
                print(f"{i:3d}  {c['day_rows'] or 0:8d}  {c['cases_enriched'] or 0:14d}  "
                      f"{c['enrich_step_s'] or 0:13.1f}  {c['run_s']:5.1f}")
            if len(costs) >= 4:
                half = len(costs) // 2
                first = sum(c["enrich_step_s"] or 0 for c in costs[:half]) / half
                last = sum(c["enrich_step_s"] or 0 for c in costs[half:]) / (len(costs) - half)
                print(f"\nenrichment step, mean seconds: first half of the runs {first:.1f}, second half {last:.1f} "
                      f"(ratio {last / first:.2f}; goal: flat, ~1.0)")
            return 0
        finally:
            stack.close()
            broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
