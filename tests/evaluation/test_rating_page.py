"""The rating page in a real browser (headless Chromium driven by Playwright): analysts rate
samples, the ratings travel through the real broker into `evaluation/ratings`, and
`evaluation/quality_metrics` reflects them."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from llm_assets.asset_keys import EVALUATION_QUALITY_METRICS, EVALUATION_RATINGS, EVALUATION_SAMPLES
from llm_assets.dev.process import free_port
from llm_assets.evaluation.assets import evaluation_quality_metrics, evaluation_ratings, evaluation_samples
from llm_assets.evaluation.rating_app import create_rating_app
from llm_assets.resources.kafka import KafkaResource
from tests.evaluation.lake import MODEL_VERSION, make_cases, write_cases

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download fails here: Debian's chromium, without the sandbox (root in CI)
# and without anything that would reach the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
DAY = "2026-11-18"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


@pytest.fixture
def rating_page(delta, kafka_broker, make_topic):
    """The rating page served by uvicorn on 127.0.0.1, publishing to a fresh topic: (base URL, topic)."""
    import uvicorn

    topic = make_topic(hint="cases-ratings")
    app = create_rating_app(delta, KafkaResource(bootstrap_servers=kafka_broker), topic=topic)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the rating page did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", topic
    server.should_exit = True
    thread.join(timeout=10)


def _rate_first_listed(page, base: str, analyst: str | None, *, wrong_label: bool, accept: str) -> dict:
    """Open the first unrated sample, rate it, send; returns what was submitted."""
    page.goto(base + "/")
    page.locator("a.rate-link").first.click()
    event_id = page.locator("h1").inner_text().removeprefix("Case ").strip()
    label = page.locator("#label").inner_text().strip()
    if wrong_label:
        page.check("#label-wrong")
        right = "other" if label != "other" else "data_quality"
        page.select_option("#correct-label", right)
    else:
        page.check("#label-correct")
        right = label
    boxes = page.locator("input[name=actions_accepted]")
    proposed = boxes.count()
    wanted = {"all": proposed, "first": min(1, proposed), "none": 0}[accept]
    for i in range(wanted):
        boxes.nth(i).check()
    if analyst is not None:
        page.fill("#analyst", analyst)
    page.click("#submit")
    page.wait_for_url(f"{base}/?rated=*")
    assert event_id in page.locator("#notice").inner_text()
    return {"event_id": event_id, "model_label": label, "label": right, "accepted": wanted,
            "proposed": proposed}


def test_analysts_rate_three_samples_and_the_quality_metrics_reflect_them(delta, rating_page, kafka_broker, tmp_path):
    from playwright.sync_api import sync_playwright

    write_cases(delta, make_cases(DAY, 60, seed=21))
    assert dg.materialize([evaluation_samples], partition_key=DAY, resources={"delta": delta}).success
    samples = {r["event_id"]: r for r in delta.read(EVALUATION_SAMPLES).iter_rows(named=True)}
    base, topic = rating_page

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(base + "/")
            listed_before = page.locator("a.rate-link").count()
            assert listed_before == len(samples)

            # The page shows the redacted case and what the model proposed.
            page.locator("a.rate-link").first.click()
            shown = page.locator("h1").inner_text().removeprefix("Case ").strip()
            assert page.locator("#case-text").inner_text().strip() == samples[shown]["text"].strip()
            assert page.locator("#summary").inner_text().strip() == samples[shown]["summary"].strip()
            assert page.locator("input[name=actions_accepted]").count() == len(json.loads(samples[shown]["actions"]))
            # A wrong label without the right one is refused, and nothing is sent.
            page.check("#label-wrong")
            page.fill("#analyst", "ana")
            page.click("#submit")
            assert "correct_label is required" in page.locator("#errors").inner_text()

            rated = [
                _rate_first_listed(page, base, "ana", wrong_label=False, accept="all"),
                _rate_first_listed(page, base, "ana", wrong_label=True, accept="none"),
                _rate_first_listed(page, base, None, wrong_label=False, accept="first"),  # name kept from before
            ]
            page.goto(base + "/")
            listed = {a.inner_text() for a in page.locator("a.rate-link").all()}
            assert page.locator("a.rate-link").count() == listed_before - 3
            assert not listed & {r["event_id"] for r in rated}
        finally:
            browser.close()

    resources = {"delta": delta, "kafka": KafkaResource(bootstrap_servers=kafka_broker)}
    imported = dg.materialize([evaluation_ratings], resources=resources, run_config={"ops": {"evaluation__ratings": {
        "config": {"topic": topic, "drop_dir": str(tmp_path / "no-files"), "consumer_group": f"{topic}-group"}}}})
    assert imported.success
    stored = {r["event_id"]: r for r in delta.read(EVALUATION_RATINGS).iter_rows(named=True)}
    assert set(stored) == {r["event_id"] for r in rated}
    for r in rated:
        row = stored[r["event_id"]]
        assert row["analyst"] == "ana" and row["label"] == r["label"] and row["model_label"] == r["model_label"]
        assert len(row["actions_accepted"]) == r["accepted"] and row["text"] == samples[r["event_id"]]["text"]

    assert dg.materialize([evaluation_quality_metrics], partition_key=DAY, resources={"delta": delta}).success
    overall = delta.read(EVALUATION_QUALITY_METRICS).filter(
        (pl.col("label") == "all") & (pl.col("model_version") == MODEL_VERSION)).row(0, named=True)
    assert overall["ratings"] == 3 and overall["precision"] == pytest.approx(2 / 3)
    assert overall["actions_accepted"] == sum(r["accepted"] for r in rated)
    assert overall["actions_proposed"] == sum(r["proposed"] for r in rated)
