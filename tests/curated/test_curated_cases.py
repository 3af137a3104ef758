"""`curated/cases`: the LEFT JOIN with defaults, incremental MERGEs, full refresh, partition-range
runs, and its blocking checks evaluated by the asset on real Delta tables."""

import json

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from llm_assets.asset_keys import CURATED_CASES, RAW_EVENTS
from llm_assets.curated import assets, joining
from llm_assets.partitions import daily_partitions
from tests.support.pipeline import write_raw_events

pytestmark = pytest.mark.integration

CHECK_NAMES = {"curated_cases_contract", "curated_cases_unique_event_id", "curated_cases_match_raw_events"}
# raw/events stands in as a spec: the ingest asset is not under test (its table is written directly).
RAW_EVENTS_SPEC = dg.AssetSpec(RAW_EVENTS, partitions_def=daily_partitions)


def _signals(delta):
    assert dg.materialize([assets.entity_signals, assets.upstream_exceptions], resources={"delta": delta}).success


def _curate(delta, days, *, full_refresh=False, instance=None):
    """One run of curated/cases over `days` (a partition key range when several)."""
    days = sorted(days)
    range_tags = ({"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
                  if len(days) > 1 else {})
    return dg.materialize(
        [RAW_EVENTS_SPEC, assets.curated_cases], selection=[CURATED_CASES], resources={"delta": delta},
        partition_key=days[0] if len(days) == 1 else None, tags=range_tags, instance=instance,
        run_config={"ops": {"curated__cases": {"config": {"full_refresh": full_refresh}}}}, raise_on_error=False)


def _metadata(result, partition):
    (mat,) = [m for m in result.asset_materializations_for_node("curated__cases") if m.partition == partition]
    return {k: v.value for k, v in mat.metadata.items()}


def _evaluations(result):
    return {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}


def _raw_day(delta, day):
    return delta.read(RAW_EVENTS, partition_column="event_date", partition_values=[day])


def _curated_day(delta, day, version=None):
    return delta.read(CURATED_CASES, partition_column="event_date", partition_values=[day], version=version)


def test_join_keeps_every_raw_event_and_applies_defaults():
    raw = pl.DataFrame({
        "event_id": ["e1", "e2", "e3"], "event_date": ["2026-11-18"] * 3, "source_system": ["s"] * 3,
        "event_ts": [None] * 3, "partner_id": ["P-1"] * 3, "entity_id": ["A", "B", "A"], "payload_raw": ["x"] * 3,
    })
    signals = pl.DataFrame({"entity_id": ["A", "A"], "device_id": ["d1", "d2"], "customer_hash": ["h", "h"],
                            "partner_risk_tier": ["high", "high"], "features": [None, None]},
                           schema=joining.ENTITY_SIGNALS_SCHEMA)
    exceptions = pl.DataFrame({"event_id": ["e2"], "is_exception": [True], "exception_type": ["velocity"]})

    cases = joining.curate_cases(raw, signals, exceptions)

    assert cases.height == 3  # a duplicated signal never fans a case out
    assert list(cases.columns) == list(joining.CURATED_COLUMNS)
    by_id = {r["event_id"]: r for r in cases.to_dicts()}
    assert by_id["e1"]["partner_risk_tier"] == "high"
    assert by_id["e2"]["partner_risk_tier"] == "unknown"
    assert (by_id["e1"]["is_exception"], by_id["e1"]["exception_type"]) == (False, "none")
    assert (by_id["e2"]["is_exception"], by_id["e2"]["exception_type"]) == (True, "velocity")
    assert cases[joining.SOURCE_HASH].n_unique() == 3  # e1 and e3 differ only in event_id


def test_source_hash_changes_with_content_and_only_with_content():
    row = {"event_id": "e1", "event_date": "2026-11-18", "source_system": "s", "partner_id": None,
           "entity_id": "A", "payload_raw": "a|b"}
    schema = {**{c: pl.String for c in row}, "event_ts": pl.Datetime("us", "UTC")}

    def digest(**changes):
        return joining.with_source_hash(pl.DataFrame([{**row, "event_ts": None, **changes}], schema=schema))[
            joining.SOURCE_HASH][0]

    assert digest() == digest()  # deterministic (stored, compared across runs)
    assert digest(payload_raw="a|b ") != digest()
    assert digest(partner_id="") != digest()  # null and empty are different content
    assert digest(source_system="s|a", payload_raw="b") != digest(source_system="s", payload_raw="a|b")


def test_incremental_plan_finds_new_and_changed_events():
    raw = joining.with_source_hash(pl.DataFrame({
        "event_id": ["e1", "e2", "e3"], "event_date": ["d"] * 3, "source_system": ["s"] * 3,
        "event_ts": [None] * 3, "partner_id": ["P"] * 3, "entity_id": ["A"] * 3, "payload_raw": ["x", "y", "z"]}))
    stored = raw.filter(pl.col("event_id") != "e3").with_columns(
        pl.when(pl.col("event_id") == "e2").then(pl.lit("old")).otherwise(pl.col(joining.SOURCE_HASH))
        .alias(joining.SOURCE_HASH))

    plan = joining.plan_incremental(raw, stored)

    assert (plan.added, plan.changed, plan.unchanged) == (1, 1, 1)
    assert sorted(plan.to_curate["event_id"].to_list()) == ["e2", "e3"]


def test_raw_comparison_names_lost_invented_and_stale_cases():
    def frame(pairs):
        return pl.DataFrame({"event_id": [p[0] for p in pairs], joining.SOURCE_HASH: [p[1] for p in pairs]})

    raw = frame([("e1", "h1"), ("e2", "h2"), ("e3", "h3")])
    result = joining.compare_with_raw(frame([("e1", "h1"), ("e2", "old"), ("e9", "h9")]), raw)
    assert (result.lost, result.invented, result.stale, result.passed) == (["e3"], ["e9"], ["e2"], False)
    assert joining.compare_with_raw(frame([("e1", "h1"), ("e2", "h2"), ("e3", "h3")]), raw).passed
    # A newer raw version explains cases curated from it by a concurrent run of the same date.
    newer = frame([("e2", "h2-new"), ("e4", "h4")])
    explained = joining.compare_with_raw(frame([("e1", "h1"), ("e2", "h2-new"), ("e3", "h3"), ("e4", "h4")]),
                                         raw, newer)
    assert explained.passed


def test_curated_checks_pass_on_sample_data(curated_home, delta):
    per_day = write_raw_events(delta, curated_home / "sample_data")
    day = sorted(per_day)[0]
    _signals(delta)

    result = _curate(delta, [day])

    assert result.success
    evaluations = _evaluations(result)
    assert set(evaluations) == {(name, day) for name in CHECK_NAMES}
    assert all(e.passed for e in evaluations.values()), [(k, e.metadata) for k, e in evaluations.items()]
    curated = _curated_day(delta, day)
    assert curated.height == per_day[day]
    assert curated["partner_risk_tier"].is_in(["unknown"]).any()  # some entities have no signals
    assert curated["is_exception"].any()
    meta = _metadata(result, day)
    assert (meta["rows_added"], meta["rows_changed"], meta["rows_unchanged"]) == (per_day[day], 0, 0)
    assert meta["dagster/row_count"] == per_day[day]
    assert meta["raw_events_version_read"] == DeltaTable(delta.uri(RAW_EVENTS)).version()
    assert meta["curated_cases_versions_written"] == {day: DeltaTable(delta.uri(CURATED_CASES)).version()}


def test_rerun_of_a_partition_writes_nothing(curated_home, delta):
    day = sorted(write_raw_events(delta, curated_home / "sample_data"))[1]
    _signals(delta)
    _curate(delta, [day])
    version = delta.version(CURATED_CASES)
    first = _curated_day(delta, day)

    result = _curate(delta, [day])

    assert result.success
    meta = _metadata(result, day)
    assert (meta["rows_added"], meta["rows_changed"], meta["rows_unchanged"]) == (0, 0, first.height)
    assert meta["curated_cases_versions_written"] == {day: None}
    assert delta.version(CURATED_CASES) == version  # no commit at all
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_a_batch_curates_only_its_new_and_changed_events(curated_home, delta):
    day = sorted(write_raw_events(delta, curated_home / "sample_data"))[0]
    _signals(delta)
    _curate(delta, [day])
    raw = _raw_day(delta, day)
    # A micro-batch: two new events, and a re-delivery of one event with new content.
    new = raw.head(2).with_columns(pl.concat_str([pl.col("event_id"), pl.lit("-late")]).alias("event_id"))
    changed = raw.slice(5, 1).with_columns(pl.lit('{"note": "corrected"}').alias("payload_raw"))
    delta.merge(RAW_EVENTS, pl.concat([new, changed]), ["event_id"], partition_column="event_date",
                partition_value=day)

    result = _curate(delta, [day])

    assert result.success
    meta = _metadata(result, day)
    assert (meta["rows_added"], meta["rows_changed"], meta["rows_unchanged"]) == (2, 1, raw.height - 1)
    commit = DeltaTable(delta.uri(CURATED_CASES)).history(1)[0]
    assert commit["operation"] == "MERGE"
    assert (commit["operationMetrics"]["num_target_rows_inserted"],
            commit["operationMetrics"]["num_target_rows_updated"]) == (2, 1)  # the unchanged rows are not updated
    curated = _curated_day(delta, day)
    assert curated.height == raw.height + 2
    fixed = curated.filter(pl.col("event_id") == changed["event_id"][0])
    assert fixed["payload_raw"].to_list() == ['{"note": "corrected"}']


def test_full_refresh_recomputes_the_day_with_changed_signals(curated_home, delta):
    sample = curated_home / "sample_data"
    day = sorted(write_raw_events(delta, sample))[0]
    _signals(delta)
    _curate(delta, [day])
    entity = _raw_day(delta, day)["entity_id"][0]
    with (sample / "entity_signals.jsonl").open("a") as f:  # the last row of an entity wins
        f.write(json.dumps({"entity_id": entity, "device_id": "D-new", "customer_hash": "h",
                            "partner_risk_tier": "high", "features": {}}) + "\n")
    _signals(delta)

    incremental = _curate(delta, [day])
    assert _metadata(incremental, day)["rows_changed"] == 0  # an incremental run does not see signal changes
    assert "D-new" not in _curated_day(delta, day)["device_id"].to_list()

    refreshed = _curate(delta, [day], full_refresh=True)

    assert refreshed.success
    meta = _metadata(refreshed, day)
    assert meta["mode"] == "full_refresh"
    cases = _curated_day(delta, day)
    assert set(cases.filter(pl.col("entity_id") == entity)["device_id"].to_list()) == {"D-new"}
    assert cases.height == _raw_day(delta, day).height
    assert all(e.passed for e in refreshed.get_asset_check_evaluations())


def test_a_range_run_merges_its_dates_in_one_commit_and_reports_checks_per_date(curated_home, delta):
    per_day = write_raw_events(delta, curated_home / "sample_data")
    days = sorted(per_day)
    _signals(delta)

    with dg.instance_for_test() as instance:  # sqlite, sharded by run like a deployed instance
        result = _curate(delta, days, instance=instance)

        assert result.success
        evaluations = _evaluations(result)
        assert set(evaluations) == {(name, day) for name in CHECK_NAMES for day in days}
        assert all(e.passed for e in evaluations.values())
        written = _metadata(result, days[0])["curated_cases_versions_written"]
        assert sorted(written) == days and len(set(written.values())) == 1  # one MERGE (commit) for the range
        for day in days:
            assert _curated_day(delta, day, version=written[day]).height == per_day[day]
            # Each evaluation judges its date's materialization of this run (what the UI and automation read).
            materialization = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=CURATED_CASES, asset_partitions=[day]), limit=1).records[0]
            target = evaluations[("curated_cases_match_raw_events", day)].target_materialization_data
            assert (target.storage_id, target.run_id) == (materialization.storage_id, result.run_id)
        for name in CHECK_NAMES:
            status = instance.event_log_storage.get_asset_check_partition_info([dg.AssetCheckKey(CURATED_CASES, name)])
            assert {info.partition_key for info in status if info.is_current} == set(days)


def test_a_range_full_refresh_drops_what_raw_lost_in_its_dates_only(curated_home, delta):
    per_day = write_raw_events(delta, curated_home / "sample_data")
    days = sorted(per_day)
    _signals(delta)
    assert _curate(delta, days).success
    # raw/events loses one event on each of the first two dates (a correction upstream).
    gone = {day: _raw_day(delta, day)["event_id"].sort()[0] for day in days[:2]}
    DeltaTable(delta.uri(RAW_EVENTS)).delete(" OR ".join(f"event_id = '{e}'" for e in gone.values()))
    untouched = _curated_day(delta, days[2])

    refreshed = _curate(delta, days[:2], full_refresh=True)

    assert refreshed.success
    assert all(e.passed for e in refreshed.get_asset_check_evaluations())
    lines = [[cell.strip() for cell in line.strip().strip("|").split("|")]
             for line in _metadata(refreshed, days[0])["by_date"].splitlines() if line.startswith("|")]
    header, rows = lines[0], lines[2:]  # the markdown table: header, rule, rows
    by_date = {row[header.index("event_date")]: dict(zip(header, row)) for row in rows}
    for day in days[:2]:
        assert by_date[day]["deleted"] == "1"
        assert gone[day] not in _curated_day(delta, day)["event_id"].to_list()
        assert _curated_day(delta, day).height == per_day[day] - 1
    assert _curated_day(delta, days[2]).sort("event_id").equals(untouched.sort("event_id"))  # outside the run


def test_contract_check_fails_on_planted_violations_in_the_sources(curated_home, delta):
    sample = curated_home / "sample_data"
    day = sorted(write_raw_events(delta, sample))[0]
    raw = _raw_day(delta, day)
    entity, event_id = raw["entity_id"][0], raw.filter(pl.col("entity_id") != raw["entity_id"][0])["event_id"][0]
    # Plant: an unknown risk tier for one entity, and an exception flagged without a type.
    with (sample / "entity_signals.jsonl").open("a") as f:
        f.write(json.dumps({"entity_id": entity, "device_id": "D", "customer_hash": "h",
                            "partner_risk_tier": "bogus", "features": {}}) + "\n")
    with (sample / "exceptions.jsonl").open("a") as f:
        f.write(json.dumps({"event_id": event_id, "is_exception": True, "exception_type": "none"}) + "\n")
    _signals(delta)

    result = _curate(delta, [day])

    assert not result.success  # blocking ERROR checks fail the step
    outcome = {name: e for (name, _), e in _evaluations(result).items()}
    assert not outcome["curated_cases_contract"].passed
    violations = outcome["curated_cases_contract"].metadata["violations"].value
    bogus = raw.filter(pl.col("entity_id") == entity).height
    assert violations == {"partner_risk_tier outside low/medium/high/unknown": bogus,
                          "exception flagged without a type": 1}
    assert outcome["curated_cases_unique_event_id"].passed
    assert outcome["curated_cases_match_raw_events"].passed


def test_a_case_lost_from_curated_is_curated_again(curated_home, delta):
    day = sorted(write_raw_events(delta, curated_home / "sample_data"))[0]
    _signals(delta)
    _curate(delta, [day])
    lost = _raw_day(delta, day)["event_id"][0]
    DeltaTable(delta.uri(CURATED_CASES)).delete(f"event_date = '{day}' AND event_id = '{lost}'")

    result = _curate(delta, [day])

    assert result.success
    assert _metadata(result, day)["rows_added"] == 1
    assert lost in _curated_day(delta, day)["event_id"].to_list()


def test_a_table_from_before_the_source_hash_is_migrated(curated_home, delta):
    days = sorted(write_raw_events(delta, curated_home / "sample_data"))
    _signals(delta)
    legacy = joining.curate_cases(_raw_day(delta, days[0]), delta.read(assets.ENTITY_SIGNALS),
                                  delta.read(assets.EXCEPTIONS)).drop(joining.SOURCE_HASH)
    delta.merge(CURATED_CASES, legacy, ["event_id"], partition_column="event_date", partition_value=days[0])

    result = _curate(delta, days[:2])

    assert result.success, [(k, e.metadata) for k, e in _evaluations(result).items() if not e.passed]
    meta = _metadata(result, days[0])
    assert meta["rows_changed"] == legacy.height  # every legacy row gets its hash
    assert _curated_day(delta, days[0])[joining.SOURCE_HASH].null_count() == 0


@dg.asset(key=["downstream", "of_curated"], deps=[CURATED_CASES], partitions_def=daily_partitions)
def downstream_of_curated() -> None:
    """Stands for enriched/cases in the same run: it must not start past a failed curated check."""


def test_a_failed_curated_check_stops_downstream_assets_in_the_same_run(curated_home, delta):
    sample = curated_home / "sample_data"
    day = sorted(write_raw_events(delta, sample))[0]
    _signals(delta)

    def run(full_refresh=False):
        result = dg.materialize([RAW_EVENTS_SPEC, assets.curated_cases, downstream_of_curated],
                                selection=[CURATED_CASES, downstream_of_curated.key], partition_key=day,
                                resources={"delta": delta}, raise_on_error=False,
                                run_config={"ops": {"curated__cases": {"config": {"full_refresh": full_refresh}}}})
        return {event.asset_key for event in result.get_asset_materialization_events()}

    assert run() == {CURATED_CASES, downstream_of_curated.key}
    with (sample / "entity_signals.jsonl").open("a") as f:  # a risk tier outside the contract
        f.write(json.dumps({"entity_id": _raw_day(delta, day)["entity_id"][0], "device_id": "D",
                            "customer_hash": "h", "partner_risk_tier": "bogus", "features": {}}) + "\n")
    _signals(delta)
    # Written (a failed check does not undo a write), but nothing downstream starts.
    assert run(full_refresh=True) == {CURATED_CASES}
