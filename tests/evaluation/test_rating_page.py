"""The rating page in a real browser (headless Chromium driven by Playwright): analysts log in with
their tokens and rate samples, the ratings travel through the real broker into `evaluation/ratings`,
and `evaluation/quality_metrics` reflects them; without credentials, with a forged identity header,
without the form's CSRF token or beyond the rate limit, nothing is sent."""

from __future__ import annotations

import contextlib
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
from llm_assets.evaluation.analysts import AnalystRegistry
from llm_assets.evaluation.page_auth import PageAuth
from llm_assets.evaluation.rating_app import create_rating_app
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.kafka import KafkaResource
from tests.evaluation.lake import MODEL_VERSION, make_cases, write_cases
from tests.support.topics import read_topic

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download fails here: Debian's chromium, without the sandbox (root in CI)
# and without anything that would reach the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
DAY = "2026-11-18"
PER_MINUTE = 5
PROXY_SECRET = "proxy-secret-for-tests"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


@contextlib.contextmanager
def _chromium():
    """Debian's Chromium, headless, closed after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts(tmp_path) -> ArtifactStore:
    return ArtifactStore(root=str(tmp_path / "artifacts"))


@pytest.fixture
def tokens(artifacts) -> dict[str, str]:
    """Analyst -> token, issued as `llm-assets analysts add NAME` issues them."""
    registry = AnalystRegistry(artifacts)
    return {name: registry.add(name) for name in ("ana", "ben")}


@pytest.fixture
def rating_page(delta, kafka_broker, make_topic, artifacts, tokens):
    """The rating page served by uvicorn on 127.0.0.1, publishing to a fresh topic: (base URL, topic).
    Its only trusted proxy is 10.0.0.0/8, so a request from 127.0.0.1 is never the proxy."""
    import uvicorn

    topic = make_topic(hint="cases-ratings")
    auth = PageAuth(AnalystRegistry(artifacts), trusted_proxies=["10.0.0.0/8"], proxy_secret=PROXY_SECRET,
                    per_minute=PER_MINUTE)
    app = create_rating_app(delta, KafkaResource(bootstrap_servers=kafka_broker), auth, topic=topic)
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


def _rate_first_listed(page, base: str, *, wrong_label: bool, accept: str) -> dict:
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
    page.click("#submit")
    page.wait_for_url(f"{base}/?rated=*")
    assert event_id in page.locator("#notice").inner_text()
    return {"event_id": event_id, "model_label": label, "label": right, "accepted": wanted,
            "proposed": proposed}


def test_analysts_rate_three_samples_and_the_quality_metrics_reflect_them(delta, rating_page, kafka_broker, tmp_path,
                                                                          tokens, artifacts):
    write_cases(delta, make_cases(DAY, 60, seed=21))
    assert dg.materialize([evaluation_samples], partition_key=DAY, resources={"delta": delta}).success
    samples = {r["event_id"]: r for r in delta.read(EVALUATION_SAMPLES).iter_rows(named=True)}
    base, topic = rating_page

    with _chromium() as browser:
        page = browser.new_page()
        page.goto(f"{base}/login")
        page.fill("#token", tokens["ana"])
        page.click("#login")
        assert "ana" in page.locator("#signed-in").inner_text()
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
        page.click("#submit")
        assert "correct_label is required" in page.locator("#errors").inner_text()

        rated = [
            _rate_first_listed(page, base, wrong_label=False, accept="all"),
            _rate_first_listed(page, base, wrong_label=True, accept="none"),
            _rate_first_listed(page, base, wrong_label=False, accept="first"),
        ]
        page.goto(base + "/")
        listed = {a.inner_text() for a in page.locator("a.rate-link").all()}
        assert page.locator("a.rate-link").count() == listed_before - 3
        assert not listed & {r["event_id"] for r in rated}

    resources = {"delta": delta, "kafka": KafkaResource(bootstrap_servers=kafka_broker)}
    imported = dg.materialize([evaluation_ratings], resources=resources, run_config={"ops": {"evaluation__ratings": {
        "config": {"topic": topic, "drop_dir": str(tmp_path / "no-files"), "consumer_group": f"{topic}-group"}}}})
    assert imported.success
    stored = {r["event_id"]: r for r in delta.read(EVALUATION_RATINGS).iter_rows(named=True)}
    assert set(stored) == {r["event_id"] for r in rated}
    for r in rated:
        row = stored[r["event_id"]]
        assert row["analyst"] == "ana" and row["label"] == r["label"] and row["model_label"] == r["model_label"]
        assert row["auth_method"] == "token"
        assert len(row["actions_accepted"]) == r["accepted"] and row["text"] == samples[r["event_id"]]["text"]

    assert dg.materialize([evaluation_quality_metrics], partition_key=DAY,
                          resources={"delta": delta, "artifacts": artifacts}).success
    overall = delta.read(EVALUATION_QUALITY_METRICS).filter(
        (pl.col("label") == "all") & (pl.col("model_version") == MODEL_VERSION)).row(0, named=True)
    assert overall["ratings"] == 3 and overall["precision"] == pytest.approx(2 / 3)
    assert overall["actions_accepted"] == sum(r["accepted"] for r in rated)
    assert overall["actions_proposed"] == sum(r["proposed"] for r in rated)


def _one_sample(delta) -> str:
    write_cases(delta, make_cases(DAY, 12, seed=5))
    assert dg.materialize([evaluation_samples], partition_key=DAY, resources={"delta": delta}).success
    return delta.read(EVALUATION_SAMPLES)["event_id"][0]


def test_without_credentials_or_with_a_forged_identity_nothing_is_rated(delta, rating_page, kafka_broker, tokens):
    event_id = _one_sample(delta)
    base, topic = rating_page
    with _chromium() as browser:
        anonymous = browser.new_page()
        shown = anonymous.goto(f"{base}/cases/{event_id}")
        assert shown.status == 401 and anonymous.locator("#login-form").count() == 1
        posted = anonymous.request.post(f"{base}/cases/{event_id}", form={"label_correct": "yes"})
        assert posted.status == 401
        # A bad token is refused too.
        anonymous.goto(f"{base}/login?token=not-a-token")
        assert "unknown or revoked token" in anonymous.locator("#login-reason").inner_text()

        # An identity header from an address that is not the proxy: refused, even with the secret
        # and beside a valid session.
        forged = browser.new_context(extra_http_headers={"X-Forwarded-User": "ben", "X-Proxy-Secret": PROXY_SECRET})
        page = forged.new_page()
        page.goto(f"{base}/login?token={tokens['ana']}")
        listed = page.goto(f"{base}/")
        assert listed.status == 401 and "trusted proxy" in page.content()
        posted = page.request.post(f"{base}/cases/{event_id}", form={"label_correct": "yes"})
        assert posted.status == 401
    assert read_topic(kafka_broker, topic, partitions=1) == []


def test_a_form_without_its_csrf_token_is_refused_and_a_burst_gets_429(delta, rating_page, kafka_broker, tokens):
    event_id = _one_sample(delta)
    base, topic = rating_page
    with _chromium() as browser:
        page = browser.new_page()
        page.goto(f"{base}/login?token={tokens['ben']}")
        page.goto(f"{base}/cases/{event_id}")
        csrf = page.locator("input[name=csrf_token]").get_attribute("value")
        # The session cookie alone (what a cross-site form would carry): refused.
        no_token = page.request.post(f"{base}/cases/{event_id}", form={"label_correct": "yes"})
        assert no_token.status == 403 and "CSRF" in no_token.text()
        wrong = page.request.post(f"{base}/cases/{event_id}", form={"label_correct": "yes", "csrf_token": "0" * 64})
        assert wrong.status == 403
        assert read_topic(kafka_broker, topic, partitions=1) == []

        statuses = [page.request.post(f"{base}/cases/{event_id}", max_redirects=0,
                                      form={"label_correct": "yes", "csrf_token": csrf}).status
                    for _ in range(PER_MINUTE + 2)]
        assert statuses == [303] * PER_MINUTE + [429, 429]
    sent = read_topic(kafka_broker, topic, partitions=1)
    assert len(sent) == PER_MINUTE
    assert {json.loads(value)["analyst"] for _, value in sent} == {"ben"}
    assert {json.loads(value)["auth_method"] for _, value in sent} == {"token"}


def test_a_trusted_proxy_with_its_secret_names_the_analyst(delta, kafka_broker, make_topic, artifacts):
    """The proxy path, through the ASGI app (a test client can come from the proxy's address)."""
    from starlette.testclient import TestClient

    event_id = _one_sample(delta)
    topic = make_topic(hint="cases-ratings-proxy")
    auth = PageAuth(AnalystRegistry(artifacts), trusted_proxies=["127.0.0.1"], proxy_secret=PROXY_SECRET)
    app = create_rating_app(delta, KafkaResource(bootstrap_servers=kafka_broker), auth, topic=topic)
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        assert client.get("/", headers={"X-Forwarded-User": "cleo"}).status_code == 401  # no secret
        headers = {"X-Forwarded-User": "cleo", "X-Proxy-Secret": PROXY_SECRET}
        page = client.get(f"/cases/{event_id}", headers=headers)
        assert page.status_code == 200 and "cleo" in page.text
        csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        sent = client.post(f"/cases/{event_id}", headers=headers, data={"label_correct": "yes", "csrf_token": csrf},
                           follow_redirects=False)
        assert sent.status_code == 303
    (_, value), = read_topic(kafka_broker, topic, partitions=1)
    assert json.loads(value)["analyst"] == "cleo" and json.loads(value)["auth_method"] == "proxy"
