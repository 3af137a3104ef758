"""What an operator sees in the Dagster UI of the running stack, checked in headless Chromium.

The global lineage shows every group (then expanded); each key asset's group lineage shows its
node with its checks, and its page shows its group, its owning team and its checks, as the
webserver's GraphQL API declares them; every dbt model has its page with its group and owners,
and a dbt model's checks tab lists its dbt tests; `enriched/cases` shows its routes table and a
PNG plot in its latest materialization. Screenshots go to a folder under the pytest tmp dir and
are copied to `$LLM_ASSETS_TEST_ARTIFACTS/ui` (default `test-artifacts/ui`, ignored by git); the
lineage one is also the README's picture (`docs/lineage.png`) when `LLM_ASSETS_UPDATE_DOCS=1`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.stack import ANALYTICS_LOCATION, LOCATION, DaemonStack, wait_for
from tests.ui.test_backfill import BACKFILL_TIMEOUT_S, FINISHED, backfill_status, launch_backfill

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download fails here: Debian's chromium, without the sandbox (root in CI)
# and without anything that would reach the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
KEY_ASSETS = ["raw/events", "curated/cases", "enriched/cases", "kb/index", "models/embedding_gate"]
CHECKED_ASSETS = ["raw/events", "curated/cases", "enriched/cases", "kb/index"]
UI_TIMEOUT_MS = 120_000  # the UI's first paint and GraphQL answers on a loaded 2-core machine
DOCS_LINEAGE = REPO_ROOT / "docs" / "lineage.png"

pytestmark = [
    pytest.mark.e2e, pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]

ASSET_NODES_QUERY = """query Nodes { assetNodes { assetKey { path } groupName kinds
  owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
  assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } }"""


def declared_nodes(stack: DaemonStack) -> dict[str, dict]:
    """Group, kinds, owners and check names of every asset, as the webserver declares them."""
    nodes = {}
    for node in stack.graphql(ASSET_NODES_QUERY)["assetNodes"]:
        checks = node["assetChecksOrError"].get("checks") or []
        nodes["/".join(node["assetKey"]["path"])] = {
            "group": node["groupName"], "kinds": set(node["kinds"]),
            # The API returns a team owner without its `team:` prefix (the UI shows it so too).
            "owners": [o.get("team") or o.get("email") for o in node["owners"]],
            "checks": sorted(c["name"] for c in checks)}
    return nodes


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory):
    """Screenshots: a folder under the pytest tmp dir, copied afterwards to the artifacts folder CI keeps."""
    folder = tmp_path_factory.mktemp("ui-screenshots")
    yield folder
    kept = Path(os.environ.get("LLM_ASSETS_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts") / "ui"
    kept.mkdir(parents=True, exist_ok=True)
    for shot in folder.glob("*.png"):
        shutil.copyfile(shot, kept / shot.name)


@pytest.fixture(scope="module")
def enriched_stack(ui_stack):
    """The stack once `enriched/cases` is materialized (a backfill, unless the backfill test ran one)."""
    stack, raw_per_day = ui_stack
    if not stack.materializations("enriched/cases"):
        backfill_id = launch_backfill(stack, ["curated/cases", "enriched/cases"], sorted(raw_per_day))
        wait_for(lambda: backfill_status(stack, backfill_id) in FINISHED, BACKFILL_TIMEOUT_S, "the backfill", 2)
    assert stack.materializations("enriched/cases"), "enriched/cases was not materialized"
    # The "Join the Dagster community" dialog of a first visit would cover the page.
    assert stack.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
    return stack


@pytest.fixture(scope="module")
def page(enriched_stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 1100})
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def _shot(page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def _in_graph(page, name: str):
    """A node of the lineage graph by its label (the full name is in the DOM even when the label is
    middle-truncated on screen)."""
    return page.locator("foreignObject").get_by_text(name, exact=True)


def _wait_attached(locator) -> None:
    locator.first.wait_for(state="attached")


def test_the_lineage_shows_the_key_assets_and_dbt_models_with_their_groups_owners_and_checks(
        enriched_stack, page, artifacts_dir):
    stack = enriched_stack
    nodes = declared_nodes(stack)
    dbt_models = sorted(key for key, node in nodes.items() if "dbt" in node["kinds"])
    assert dbt_models, "no dbt model in the graph"
    for key in [*KEY_ASSETS, *dbt_models]:
        assert nodes[key]["group"] and nodes[key]["owners"], (key, nodes[key])
    for key in [*CHECKED_ASSETS, *dbt_models]:
        assert nodes[key]["checks"], (key, nodes[key])

    # The global lineage: every group, then expanded (the UI's own "Expand all groups", Alt+E). The
    # graph draws only the nodes in view, so each asset is looked for in its group's lineage below.
    page.goto(f"{stack.url}/asset-groups")
    groups = sorted({nodes[key]["group"] for key in [*KEY_ASSETS, *dbt_models]})
    for group in groups:
        _wait_attached(_in_graph(page, group))
    page.keyboard.press("Alt+e")
    _wait_attached(_in_graph(page, "embedding_gate"))
    page.wait_for_load_state("networkidle")
    lineage = _shot(page, artifacts_dir, "lineage")
    if os.environ.get("LLM_ASSETS_UPDATE_DOCS") == "1":
        shutil.copyfile(lineage, DOCS_LINEAGE)

    for key in [*KEY_ASSETS, dbt_models[0]]:
        expected, name = nodes[key], key.replace("/", "_")
        # Its group's lineage: the node, with its checks row ("n / N Passed") when it has checks.
        if key in KEY_ASSETS:
            page.goto(f"{stack.url}/locations/{LOCATION}/asset-groups/{expected['group']}/lineage")
            _wait_attached(_in_graph(page, key.split("/")[-1]))
            if expected["checks"]:
                _wait_attached(page.get_by_text(f"/ {len(expected['checks'])} Passed"))
            _shot(page, artifacts_dir, f"group_{expected['group']}_{name}")

        # Its page: the owning team (shown without the `team:` prefix) and the group.
        page.goto(f"{stack.url}/assets/{key}")
        page.get_by_text("Owners", exact=True).first.wait_for()
        for owner in expected["owners"]:
            page.get_by_text(owner.removeprefix("team:"), exact=True).first.wait_for()
        page.get_by_role("link", name=expected["group"], exact=True).first.wait_for()
        _shot(page, artifacts_dir, f"asset_{name}")

        # Its checks tab: every check by name.
        if expected["checks"]:
            page.goto(f"{stack.url}/assets/{key}?view=checks")
            for check in expected["checks"]:
                _wait_attached(page.get_by_text(check, exact=True))
            _shot(page, artifacts_dir, f"checks_{name}")

    # Every dbt model has its page with its group and owning team (the graph draws only the nodes in
    # view, so the pages are what proves each one is there).
    for key in dbt_models[1:]:
        page.goto(f"{stack.url}/assets/{key}")
        page.get_by_role("link", name=nodes[key]["group"], exact=True).first.wait_for()
        for owner in nodes[key]["owners"]:
            page.get_by_text(owner.removeprefix("team:"), exact=True).first.wait_for()
    # The dbt models are a code location of their own (workspace.yaml); the global lineage above joins them.
    page.goto(f"{stack.url}/locations/{ANALYTICS_LOCATION}/asset-groups/{nodes[dbt_models[0]]['group']}/lineage")
    page.wait_for_load_state("networkidle")
    _shot(page, artifacts_dir, "group_dbt_models")


def _markdown_entry(page, label: str):
    """The rendered markdown of the metadata entry `label`: inline when short, else in the dialog its
    "[Show Markdown]" button opens (a PNG plot is always long)."""
    row = page.locator("tr", has=page.get_by_text(label, exact=True)).first
    row.wait_for()
    button = row.get_by_text("[Show Markdown]", exact=True)
    if button.count() == 0:
        return row
    button.first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    return dialog


def _close_dialog(page) -> None:
    if page.get_by_role("dialog").count():
        page.keyboard.press("Escape")
        page.get_by_role("dialog").wait_for(state="detached")


def test_enriched_cases_shows_its_routes_table_and_a_routes_plot(enriched_stack, page, artifacts_dir):
    stack = enriched_stack
    page.goto(f"{stack.url}/assets/enriched/cases")
    # The latest materialization's metadata: the routes table (markdown) and its plot (a PNG data URI).
    routes = _markdown_entry(page, "routes")
    routes.get_by_role("columnheader", name="decided now").first.wait_for()
    routes.get_by_role("columnheader", name="served from cache").first.wait_for()
    _shot(page, artifacts_dir, "enriched_cases_routes")
    _close_dialog(page)

    plot = _markdown_entry(page, "plot_routes").locator('img[alt="cases by route"][src^="data:image/png"]').first
    plot.wait_for()
    _shot(page, artifacts_dir, "enriched_cases_plot")
    assert plot.evaluate("img => img.complete && img.naturalWidth > 0")
    _close_dialog(page)
