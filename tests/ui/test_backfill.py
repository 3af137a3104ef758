"""A backfill of three days of `curated/cases` + `enriched/cases`, launched through the running
webserver's GraphQL API, is executed by the daemon as one run (`BackfillPolicy.single_run()`); with
no config (as from the UI) it recomputes the days whose rows are behind the serving versions and
leaves current days alone."""

from __future__ import annotations

import polars as pl
import pytest

from llm_assets.asset_keys import ENRICHED_CASES
from llm_assets.resources.delta import DeltaLakeStorage
from tests.e2e.stack import TERMINAL_STATUSES, DaemonStack, wait_for

pytestmark = pytest.mark.e2e

BACKFILL_TIMEOUT_S = 420
FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def launch_backfill(stack: DaemonStack, keys: list[str], dates: list[str], run_config: dict | None = None) -> str:
    """`launchPartitionBackfill` of asset keys (user strings) over `dates`; returns the backfill id."""
    params = {"partitionNames": dates, "assetSelection": [{"path": k.split("/")} for k in keys],
              "runConfigData": run_config or {}}
    data = stack.graphql("""mutation Backfill($params: LaunchBackfillParams!) {
          launchPartitionBackfill(backfillParams: $params) { __typename
            ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
            ... on UnauthorizedError { message } } }""", {"params": params})["launchPartitionBackfill"]
    assert data["__typename"] == "LaunchBackfillSuccess", data
    return data["backfillId"]


def backfill_status(stack: DaemonStack, backfill_id: str) -> str:
    data = stack.graphql("""query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) {
          __typename ... on PartitionBackfill { status } ... on PythonError { message } } }""",
                         {"id": backfill_id})["partitionBackfillOrError"]
    assert data["__typename"] == "PartitionBackfill", data
    return data["status"]


def test_a_three_day_backfill_of_curated_and_enriched_cases_runs_as_one_run(ui_stack):
    stack, raw_per_day = ui_stack
    dates = sorted(raw_per_day)
    assert len(dates) == 3, raw_per_day

    backfill_id = launch_backfill(stack, ["curated/cases", "enriched/cases"], dates)
    status = wait_for(lambda: (s := backfill_status(stack, backfill_id)) in FINISHED and s,
                      BACKFILL_TIMEOUT_S, f"backfill {backfill_id}", interval_s=2)
    runs = stack.runs(tags={"dagster/backfill": backfill_id})

    assert len(runs) == 1, [(r["runId"], r["status"]) for r in runs]
    [run] = runs
    assert run["status"] in TERMINAL_STATUSES
    assert run["status"] == "SUCCESS", stack.failure(run["runId"])
    assert status in {"COMPLETED", "COMPLETED_SUCCESS"}, status
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert (tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")) \
        == (dates[0], dates[-1]), tags

    enriched = DeltaLakeStorage(root=str(stack.home / "delta")).read(ENRICHED_CASES)
    per_day = dict(enriched.group_by("event_date").agg(pl.col("event_id").n_unique()).iter_rows())
    assert {str(day): n for day, n in per_day.items()} == raw_per_day
    materialized = {m["partition"] for m in stack.materializations("enriched/cases") if m["runId"] == run["runId"]}
    assert materialized == set(dates)


def _finished_backfill(stack: DaemonStack, keys: list[str], dates: list[str]) -> dict:
    backfill_id = launch_backfill(stack, keys, dates)
    status = wait_for(lambda: (s := backfill_status(stack, backfill_id)) in FINISHED and s,
                      BACKFILL_TIMEOUT_S, f"backfill {backfill_id}", interval_s=2)
    [run] = stack.runs(tags={"dagster/backfill": backfill_id})
    assert status in {"COMPLETED", "COMPLETED_SUCCESS"} and run["status"] == "SUCCESS", stack.failure(run["runId"])
    return run


def test_a_backfill_with_no_config_recomputes_the_days_behind_the_serving_gate_and_leaves_current_days_alone(
        ui_stack):
    from deltalake import DeltaTable

    stack, raw_per_day = ui_stack
    dates = sorted(raw_per_day)
    delta = DeltaLakeStorage(root=str(stack.home / "delta"))
    _finished_backfill(stack, ["curated/cases", "enriched/cases"], dates)  # every day current
    before = delta.read(ENRICHED_CASES)
    serving_gate = before["gate_version"].unique().to_list()
    assert len(serving_gate) == 1 and serving_gate[0] is not None
    # The first day's rows were decided by a gate that no longer serves (as after a retraining).
    DeltaTable(delta.uri(ENRICHED_CASES)).update(predicate=f"event_date = '{dates[0]}'",
                                                 updates={"gate_version": "'an-older-gate'"})

    run = _finished_backfill(stack, ["enriched/cases"], dates)  # from the UI: no config at all

    after = delta.read(ENRICHED_CASES)
    assert after.height == before.height and set(after["gate_version"]) == set(serving_gate)
    def stamps(frame: pl.DataFrame, day: str) -> dict:
        return dict(frame.filter(pl.col("event_date") == day).select("event_id", "enriched_at").iter_rows())

    first_before, first_after = stamps(before, dates[0]), stamps(after, dates[0])
    assert all(first_after[i] > first_before[i] for i in first_before)  # the day behind: recomputed
    assert all(stamps(after, d) == stamps(before, d) for d in dates[1:])  # current days: left alone
    # A range run's metadata is shared by its dates: the run wrote exactly the first day's cases.
    written = {m["partition"]: {e["label"]: e.get("intValue") for e in m["metadataEntries"]}.get("cases_written")
               for m in stack.materializations("enriched/cases") if m["runId"] == run["runId"]}
    assert set(written) == set(dates) and set(written.values()) == {raw_per_day[dates[0]]}, written
