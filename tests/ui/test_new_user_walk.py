"""The first hour, as a new user lives it: a fresh `make dev`, a real Chromium on the UI and the rating
page, an event from an outside Kafka client.

`llm-assets dev` on an empty home builds the seeds, the KB index and the gate and promotes the local
model version, then serves the UI. From the moment the UI answers the test checks, taking screenshots
(`$LLM_ASSETS_TEST_ARTIFACTS/ui/new_user/`): an event produced by a plain confluent-kafka producer is
enriched, with a gate and a KB index version; every asset group of the lineage gets a
materialization; the rating page lists samples and a rating sent from it reaches
`evaluation/ratings` and `evaluation/quality_metrics` after their next run (launched through
GraphQL, as the Materialize button does); the Checks tab of `enriched/cases` shows its checks passed,
not "In progress", while a micro-batch runs. The seconds each step took after the UI answered are
printed (`-s`) and written to `new_user_walk.json` beside the screenshots.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import polars as pl
import pytest
from confluent_kafka import Producer

from llm_assets.asset_keys import ENRICHED_CASES, EVALUATION_QUALITY_METRICS, EVALUATION_RATINGS
from llm_assets.dev.process import free_port
from llm_assets.resources.delta import DeltaLakeStorage
from tests.e2e.stack import RUNS_QUERY, wait_for
from tests.support.make_dev import dev_environment, start_dev

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
GROUPS = {"ingest", "curated", "knowledge_base", "models", "enrichment", "evaluation", "monitoring", "analytics"}
TIMEOUT_S = 900  # 2 shared cores, other suites beside: generous; the measured times are reported

pytestmark = [
    pytest.mark.e2e, pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]

GROUPS_QUERY = """{ assetNodes { groupName assetKey { path } assetMaterializations(limit: 1) { timestamp } } }"""
LAUNCH = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""


def _graphql(ui: str, query: str, variables: dict | None = None) -> dict:
    body = httpx.post(f"{ui}/graphql", json={"query": query, "variables": variables or {}}, timeout=60).json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def _groups_materialized(ui: str) -> set[str]:
    nodes = _graphql(ui, GROUPS_QUERY)["assetNodes"]
    return {n["groupName"] for n in nodes if n["assetMaterializations"]}


def _launch(ui: str, keys: list[str], location: str = "llm_assets", partition: str | None = None) -> str:
    params = {"selector": {"repositoryLocationName": location, "repositoryName": "__repository__",
                           "jobName": "__ASSET_JOB", "assetSelection": [{"path": k.split("/")} for k in keys]},
              "runConfigData": {}, "mode": "default"}
    if partition:
        params["executionMetadata"] = {"tags": [{"key": "dagster/partition", "value": partition}]}
    data = _graphql(ui, LAUNCH, {"params": params})["launchRun"]
    assert data["__typename"] == "LaunchRunSuccess", data
    return data["run"]["runId"]


def _run_status(ui: str, run_id: str) -> str:
    [run] = _graphql(ui, RUNS_QUERY, {"filter": {"runIds": [run_id]}})["runsOrError"]["results"]
    return run["status"]


def _produce(bootstrap: str, event_id: str) -> None:
    event = {"event_id": event_id, "source_system": "ledger", "event_ts": datetime.now(timezone.utc).isoformat(),
             "partner_id": "P-003", "entity_id": "ENT-00042",
             "payload_raw": f"Settlement amount for order {event_id} differs from the partner statement by 3.10 EUR"}
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce("events.raw", key=event_id.encode(), value=json.dumps(event).encode())
    assert producer.flush(30) == 0


class MicroBatchWatch:
    """`in_flight()`: whether a run of kafka_events_sensor is running; produces an event every 5 s until one is."""

    def __init__(self, dev):
        self.dev, self.produced, self.last = dev, 1, 0.0

    def in_flight(self) -> bool:
        sensor = {"filter": {"tags": [{"key": "dagster/sensor_name", "value": "kafka_events_sensor"}]}}
        runs = _graphql(self.dev.ui, RUNS_QUERY, sensor)["runsOrError"]["results"]
        if any(r["status"] in ("STARTING", "STARTED") for r in runs):
            return True
        if time.monotonic() - self.last > 5:
            self.produced += 1
            _produce(self.dev.bootstrap, f"walk-{self.produced:04d}")
            self.last = time.monotonic()
        return False


def test_a_new_user_sees_the_whole_loop_work_in_the_first_minutes(tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    out = Path(os.environ.get("LLM_ASSETS_TEST_ARTIFACTS", "test-artifacts")) / "ui" / "new_user"
    out.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    delta = DeltaLakeStorage(root=str(home / "delta"))
    started = time.monotonic()
    dev = start_dev(dev_environment(home, tmp_path / "samples"), tmp_path / "dev.log", "--port", str(free_port()),
                    "--events", "300", "--interval", "20", "--broker-port", str(free_port()))
    ui_up = time.monotonic()
    timings = {"ui_answers_after_start_s": round(ui_up - started, 1)}

    def mark(name: str) -> None:
        timings[name] = round(time.monotonic() - ui_up, 1)
        print(f"{name}: {timings[name]} s after the UI answered", flush=True)

    try:
        _produce(dev.bootstrap, "walk-0001")
        def outside_event_rows():
            rows = delta.read(ENRICHED_CASES).filter(pl.col("event_id") == "walk-0001") \
                if delta.exists(ENRICHED_CASES) else pl.DataFrame()
            return [rows] if rows.height else None

        [enriched] = wait_for(outside_event_rows, TIMEOUT_S, "the outside event enriched", 2)
        mark("outside_event_enriched")
        row = enriched.row(0, named=True)
        assert row["gate_version"] and row["kb_index_version"] not in (None, "none"), row
        first = delta.read(ENRICHED_CASES)
        assert first["gate_version"].null_count() == 0 and "none" not in set(first["kb_index_version"])

        wait_for(lambda: GROUPS <= _groups_materialized(dev.ui), TIMEOUT_S, "every asset group materialized", 5)
        mark("every_group_materialized")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(dev.ui + "/asset-groups", wait_until="networkidle")
                try:  # a first visit's "Join the Dagster community" dialog: a new user skips it
                    page.get_by_role("button", name="Skip").click(timeout=10_000)
                except PlaywrightTimeout:
                    pass
                page.screenshot(path=str(out / "01-lineage.png"))

                # The rating page asks who is there; make dev's one-click login signs the local analyst in.
                page.goto(dev.rating_page + "/")
                assert page.locator("#login-form").count() == 1
                page.goto(dev.analyst_login)
                assert "local-analyst" in page.locator("#signed-in").inner_text()

                # The rating page lists samples; a rating goes out through it.
                def samples_listed():
                    page.goto(dev.rating_page + "/")
                    return page.locator("a.rate-link").count()

                assert wait_for(samples_listed, TIMEOUT_S, "samples on the rating page", 5) > 0
                mark("samples_listed")
                page.screenshot(path=str(out / "02-rating-page.png"))
                page.locator("a.rate-link").first.click()
                rated = page.locator("h1").inner_text().removeprefix("Case ").strip()
                page.check("#label-correct")
                page.click("#submit")
                page.wait_for_url(f"{dev.rating_page}/?rated=*")
                page.screenshot(path=str(out / "03-rated.png"))

                # Their next run, as the Materialize button launches it.
                ratings_run = _launch(dev.ui, ["evaluation/ratings"])
                assert wait_for(lambda: (s := _run_status(dev.ui, ratings_run)) in ("SUCCESS", "FAILURE") and s,
                                TIMEOUT_S, "evaluation/ratings", 2) == "SUCCESS"
                stored = delta.read(EVALUATION_RATINGS)
                assert stored.filter(pl.col("event_id") == rated)["analyst"].to_list() == ["local-analyst"]
                day = delta.read(ENRICHED_CASES).filter(pl.col("event_id") == rated)["event_date"].item()
                metrics_run = _launch(dev.ui, ["evaluation/quality_metrics"], partition=day)
                assert wait_for(lambda: (s := _run_status(dev.ui, metrics_run)) in ("SUCCESS", "FAILURE") and s,
                                TIMEOUT_S, "evaluation/quality_metrics", 2) == "SUCCESS"
                metrics = delta.read(EVALUATION_QUALITY_METRICS).filter(
                    (pl.col("event_date") == day) & (pl.col("label") == "all"))
                assert metrics["ratings"].sum() >= 1
                mark("rating_counted")

                # The Checks tab while a micro-batch runs: passed, never "In progress".
                wait_for(MicroBatchWatch(dev).in_flight, TIMEOUT_S, "a micro-batch in flight", 0.3)
                page.goto(f"{dev.ui}/assets/enriched/cases?view=checks", wait_until="networkidle")
                page.wait_for_selector("text=labels_and_confidence_valid", timeout=60_000)
                page.screenshot(path=str(out / "04-enriched-checks.png"), full_page=True)
                text = page.locator("body").inner_text()
                assert "in progress" not in text.lower(), text[:2000]
                assert "Passed" in text or "Succeeded" in text, text[:2000]
            finally:
                browser.close()
    finally:
        dev.stop()
        (out / "new_user_walk.json").write_text(json.dumps(timings, indent=2))
