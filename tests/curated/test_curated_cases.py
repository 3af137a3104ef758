"""`curated/cases`: the LEFT JOIN with defaults, and its blocking checks on real Delta tables."""

import json

import dagster as dg
import polars as pl

from llm_assets.curated import assets, checks, joining
from llm_assets.partitions import daily_partitions
from tests.support.pipeline import write_raw_events

RAW_EVENTS_SPEC = dg.AssetSpec(assets.RAW_EVENTS, partitions_def=daily_partitions)
CURATED_DEFS = [assets.entity_signals, assets.upstream_exceptions, assets.curated_cases,
                checks.curated_cases_contract, checks.curated_cases_unique_event_id,
                checks.curated_cases_match_raw_events]


def _run(delta, selection, partition_key=None):
    # One PartitionsDefinition per run: raw/events stands in as a spec (the ingest asset is not under test).
    defs = CURATED_DEFS if partition_key is None else [RAW_EVENTS_SPEC, *CURATED_DEFS[2:]]
    return dg.materialize(defs, selection=selection, partition_key=partition_key,
                          resources={"delta": delta}, raise_on_error=False)


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
    by_id = {r["event_id"]: r for r in cases.to_dicts()}
    assert by_id["e1"]["partner_risk_tier"] == "high"
    assert by_id["e2"]["partner_risk_tier"] == "unknown"
    assert (by_id["e1"]["is_exception"], by_id["e1"]["exception_type"]) == (False, "none")
    assert (by_id["e2"]["is_exception"], by_id["e2"]["exception_type"]) == (True, "velocity")


def test_curated_checks_pass_on_sample_data(curated_home, delta):
    per_day = write_raw_events(delta, curated_home / "sample_data")
    day = sorted(per_day)[0]
    assert _run(delta, [assets.ENTITY_SIGNALS, assets.EXCEPTIONS]).success

    result = _run(delta, dg.AssetSelection.assets(assets.CURATED_CASES), partition_key=day)

    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.asset_check_key.name for e in evaluations} == {
        "curated_cases_contract", "curated_cases_unique_event_id", "curated_cases_match_raw_events"}
    assert all(e.passed for e in evaluations), [(e.asset_check_key.name, e.metadata) for e in evaluations]
    curated = delta.read("curated/cases", partition_column="event_date", partition_values=[day])
    assert curated.height == per_day[day]
    assert curated["partner_risk_tier"].is_in(["unknown"]).any()  # some entities have no signals
    assert curated["is_exception"].any()


def test_rerun_of_a_partition_leaves_one_row_per_event(curated_home, delta):
    day = sorted(write_raw_events(delta, curated_home / "sample_data"))[1]
    _run(delta, [assets.ENTITY_SIGNALS, assets.EXCEPTIONS])
    _run(delta, dg.AssetSelection.assets(assets.CURATED_CASES), partition_key=day)
    first = delta.count("curated/cases", partition_column="event_date", partition_value=day)

    _run(delta, dg.AssetSelection.assets(assets.CURATED_CASES), partition_key=day)

    assert delta.count("curated/cases", partition_column="event_date", partition_value=day) == first


def test_contract_check_fails_on_planted_violations_in_the_sources(curated_home, delta):
    sample = curated_home / "sample_data"
    day = sorted(write_raw_events(delta, sample))[0]
    raw = delta.read("raw/events", partition_column="event_date", partition_values=[day])
    entity, event_id = raw["entity_id"][0], raw.filter(pl.col("entity_id") != raw["entity_id"][0])["event_id"][0]
    # Plant: an unknown risk tier for one entity, and an exception flagged without a type.
    with (sample / "entity_signals.jsonl").open("a") as f:
        f.write(json.dumps({"entity_id": entity, "device_id": "D", "customer_hash": "h",
                            "partner_risk_tier": "bogus", "features": {}}) + "\n")
    with (sample / "exceptions.jsonl").open("a") as f:
        f.write(json.dumps({"event_id": event_id, "is_exception": True, "exception_type": "none"}) + "\n")
    _run(delta, [assets.ENTITY_SIGNALS, assets.EXCEPTIONS])

    result = _run(delta, dg.AssetSelection.assets(assets.CURATED_CASES), partition_key=day)

    outcome = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert not outcome["curated_cases_contract"].passed
    violations = outcome["curated_cases_contract"].metadata["violations"].value
    bogus = raw.filter(pl.col("entity_id") == entity).height
    assert violations == {"partner_risk_tier outside low/medium/high/unknown": bogus,
                          "exception flagged without a type": 1}
    assert outcome["curated_cases_unique_event_id"].passed
    assert outcome["curated_cases_match_raw_events"].passed


def test_row_count_check_fails_when_a_case_is_lost_or_invented():
    assert checks.row_count_result(10, 10).passed
    lost = checks.row_count_result(9, 10)
    assert not lost.passed and lost.metadata["difference"].value == -1
    assert not checks.row_count_result(11, 10).passed
