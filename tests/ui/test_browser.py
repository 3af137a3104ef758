"""What an operator sees in the Dagster UI of the running stack, checked in headless Chromium.

The lineage shows the key assets; each asset's page shows its group, its owning team and its
checks (as the GraphQL API declares them); `enriched/cases` shows its routes table and
`monitoring/drift_report` a PNG plot. Screenshots go to the test artifacts folder; the lineage
one is also the README's picture (`docs/lineage.png`) when `LLM_ASSETS_UPDATE_DOCS=1`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.stack import LOCATION, REPOSITORY, DaemonStack
from tests.ui.test_backfill import BACKFILL_TIMEOUT_S, launch_backfill, backfill_status, FINISHED
from tests.e2e.stack import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
KEY_ASSETS = ["raw/events", "curated/cases", "enriched/cases", "kb/index"]
UI_TIMEOUT_MS = 90_000  # the UI's first paint on a loaded 2-core machine
DOCS_LINEAGE = Path(__file__).resolve().parents[2] / "docs" / "lineage.png"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

ASSET_QUERY = """query Node($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename
  ... on AssetNode { groupName owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } } }"""


def declared(stack: DaemonStack, key: str) -> dict:
    """Group, owners and check names of an asset as the webserver declares them."""
    node = stack.graphql(ASSET_QUERY, {"key": {"path": key.split("/")}})["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    checks = node["assetChecksOrError"].get("checks") or []
    return {"group": node["groupName"], "owners": [o.get("team") or o.get("email") for o in node["owners"]],
            "checks": [c["name"] for c in checks]}


def materialize_drift_report(stack: DaemonStack, day: str) -> None:
    """One run of `monitoring/drift_report` for `day`, against the two days before it."""
    params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": "__ASSET_JOB",
                           "assetSelection": [{"path": ["monitoring", "drift_report"]}]},
              "runConfigData": {"ops": {"monitoring__drift_report": {"config": {"reference_days": 2}}}},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]}, "mode": "default"}
    data = stack.graphql("""mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
          __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
          ... on RunConfigValidationInvalid { errors { message } } } }""", {"params": params})["launchRun"]
    assert data["__typename"] == "LaunchRunSuccess", data
    run = stack.wait_for_run(data["run"]["runId"], BACKFILL_TIMEOUT_S)
    assert run["status"] == "SUCCESS", stack.failure(run["runId"])


@pytest.fixture(scope="module")
def enriched_stack(ui_stack):
    """The stack once `enriched/cases` and a drift report exist (a backfill unless the other test ran one)."""
    stack, raw_per_day = ui_stack
    dates = sorted(raw_per_day)
    if not stack.materializations("enriched/cases"):
        backfill_id = launch_backfill(stack, ["curated/cases", "enriched/cases"], dates)
        wait_for(lambda: backfill_status(stack, backfill_id) in FINISHED, BACKFILL_TIMEOUT_S, "the backfill", 2)
    materialize_drift_report(stack, dates[-1])
    return stack


@pytest.fixture(scope="module")
def page(enriched_stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def _open(page, url: str, wait_text: str) -> str:
    page.goto(url)
    page.get_by_text(wait_text, exact=False).first.wait_for()
    page.wait_for_load_state("networkidle")
    return page.inner_text("body")


def test_the_lineage_shows_the_key_assets_with_their_groups_owners_and_checks(enriched_stack, page, artifacts_dir):
    stack = enriched_stack
    page.goto(f"{stack.url}/asset-groups")
    for key in KEY_ASSETS:
        page.get_by_text(key.split("/")[-1], exact=True).first.wait_for()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=artifacts_dir / "lineage.png", full_page=True)
    if os.environ.get("LLM_ASSETS_UPDATE_DOCS") == "1":
        shutil.copyfile(artifacts_dir / "lineage.png", DOCS_LINEAGE)
    lineage_text = page.inner_text("body")

    for key in KEY_ASSETS:
        expected = declared(stack, key)
        assert expected["group"] and expected["checks"], (key, expected)
        assert any(o.startswith("team:") for o in expected["owners"]), (key, expected)
        assert expected["group"] in lineage_text, (key, expected["group"])

        overview = _open(page, f"{stack.url}/assets/{key}", expected["group"])
        page.screenshot(path=artifacts_dir / f"asset_{key.replace('/', '_')}.png", full_page=True)
        for owner in expected["owners"]:
            assert owner.removeprefix("team:") in overview, (key, owner)

        checks = _open(page, f"{stack.url}/assets/{key}?view=checks", expected["checks"][0])
        page.screenshot(path=artifacts_dir / f"checks_{key.replace('/', '_')}.png", full_page=True)
        missing = [name for name in expected["checks"] if name not in checks]
        assert not missing, (key, missing)


def test_enriched_cases_shows_its_routes_table_and_the_drift_report_a_plot(enriched_stack, page, artifacts_dir):
    stack = enriched_stack
    text = _open(page, f"{stack.url}/assets/enriched/cases", "routes")
    page.screenshot(path=artifacts_dir / "enriched_cases.png", full_page=True)
    assert "decided now" in text and "served from cache" in text  # the routes table's header

    _open(page, f"{stack.url}/assets/monitoring/drift_report", "plot_label_mix")
    plots = page.locator('img[src^="data:image/png"]')
    plots.first.wait_for()
    page.screenshot(path=artifacts_dir / "drift_report.png", full_page=True)
    assert plots.first.evaluate("img => img.naturalWidth") > 0
