"""The automation of the daily derived assets (`curated/cases`), evaluated on a real instance.

After a restart, `AutomationCondition.eager()` requested nothing for 10.7 minutes: it waits while
any upstream run is in progress (the Kafka sensor launches one every 30 s) and only looks at
the latest partition, so older sample days were never curated.
"""

from datetime import date, timedelta

import dagster as dg
import pytest

from llm_assets.asset_keys import CURATED_CASES, ENTITY_SIGNALS, EXCEPTIONS, RAW_EVENTS
from llm_assets.automation import DEFAULT_LOOKBACK_DAYS, build_daily_derived
from llm_assets.curated import assets
from llm_assets.partitions import daily_partitions
from llm_assets.resources.delta import DeltaLakeStorage

pytestmark = pytest.mark.integration


class RawEventsRun(dg.Config):
    check_passes: bool = True


@dg.asset(key=RAW_EVENTS, partitions_def=daily_partitions, check_specs=[
    dg.AssetCheckSpec("raw_events_contract", asset=RAW_EVENTS, blocking=True, partitions_def=daily_partitions)])
def raw_events(config: RawEventsRun):
    """Stands for the ingest of one day (the Kafka ingest is not under test): a materialization
    of the partition and its blocking check, as the ingest run records them."""
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(check_name="raw_events_contract", passed=config.check_passes)


CURATED_SELECTION = dg.AssetSelection.assets(CURATED_CASES)
# The conditions are evaluated, not executed: the resource only has to be bound.
UNUSED = {"delta": DeltaLakeStorage(root="/nonexistent")}
DEFS = dg.Definitions(
    assets=[raw_events, assets.entity_signals, assets.upstream_exceptions, assets.curated_cases],
    jobs=[dg.define_asset_job("ingest", selection=[RAW_EVENTS])],
    resources=UNUSED,
)


def _day(days_ago: int) -> str:
    today = date.fromisoformat(daily_partitions.get_last_partition_key())
    return (today - timedelta(days=days_ago)).isoformat()


def _ingest(instance, day: str, check_passes: bool = True) -> None:
    result = dg.materialize([raw_events], partition_key=day, instance=instance, raise_on_error=False,
                            run_config={"ops": {"raw__events": {"config": {"check_passes": check_passes}}}})
    assert result.success == check_passes  # a failed blocking check fails the ingest run


def _evaluate(instance, cursor=None, defs=DEFS):
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=CURATED_SELECTION,
                                             cursor=cursor)


def _run_in_progress(instance, key: dg.AssetKey, day: str) -> None:
    """A run of the partition that has started and not finished (the sensor's, or the automation's)."""
    job = DEFS.resolve_implicit_global_asset_job_def() if key == CURATED_CASES else DEFS.resolve_job_def("ingest")
    instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED, asset_selection={key},
                                tags={"dagster/partition": day})


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        for key in (ENTITY_SIGNALS, EXCEPTIONS):  # the signal tables exist
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        yield instance


def test_missing_partitions_within_the_lookback_are_requested_not_only_the_latest(instance):
    for days_ago in (1, 3, 5, DEFAULT_LOOKBACK_DAYS + 3):
        _ingest(instance, _day(days_ago))

    result = _evaluate(instance)

    # Today has no raw partition yet; the day beyond the lookback stays as it is.
    assert result.get_requested_partitions(CURATED_CASES) == {_day(1), _day(3), _day(5)}


def test_a_shorter_lookback_leaves_older_days_alone(instance):
    for days_ago in (1, 3):
        _ingest(instance, _day(days_ago))
    defs = dg.Definitions(assets=[raw_events, assets.entity_signals, assets.upstream_exceptions,
                                  assets.curated_cases.map_asset_specs(
                                      lambda spec: spec.replace_attributes(
                                          automation_condition=build_daily_derived(lookback_days=2)))],
                          resources=UNUSED)

    assert _evaluate(instance, defs=defs).get_requested_partitions(CURATED_CASES) == {_day(1)}


def test_a_failed_blocking_check_upstream_holds_the_partition_back(instance):
    _ingest(instance, _day(1))
    _ingest(instance, _day(2), check_passes=False)

    assert _evaluate(instance).get_requested_partitions(CURATED_CASES) == {_day(1)}


def test_ingest_runs_in_progress_do_not_starve_the_curated_layer(instance):
    for days_ago in (1, 3):
        _ingest(instance, _day(days_ago))
    # The sensor's next batches are being ingested: one for today, one with late events of yesterday.
    _run_in_progress(instance, RAW_EVENTS, _day(0))
    _run_in_progress(instance, RAW_EVENTS, _day(1))

    result = _evaluate(instance)

    # Yesterday waits for its in-flight batch and that batch's blocking check; the other days go on.
    assert result.get_requested_partitions(CURATED_CASES) == {_day(3)}
    eager = DEFS.get_assets_def(CURATED_CASES).map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=dg.AutomationCondition.eager()))
    eager_defs = dg.Definitions(assets=[raw_events, assets.entity_signals, assets.upstream_exceptions, eager],
                                resources=UNUSED)
    # eager() looks at today only, and today waits for its ingest: nothing at all (what starved it before).
    assert _evaluate(instance, defs=eager_defs).total_requested == 0


def test_a_partition_already_in_a_run_is_not_requested_again(instance):
    for days_ago in (1, 3):
        _ingest(instance, _day(days_ago))
    _run_in_progress(instance, CURATED_CASES, _day(3))

    assert _evaluate(instance).get_requested_partitions(CURATED_CASES) == {_day(1)}


def test_a_failed_run_is_not_retried_until_new_upstream_data_lands(instance, tmp_path):
    day = _day(1)
    _ingest(instance, day)
    first = _evaluate(instance)
    assert first.get_requested_partitions(CURATED_CASES) == {day}
    # The requested run fails: raw/events is not a readable Delta table.
    broken = tmp_path / "delta" / "raw" / "events" / "_delta_log"
    broken.mkdir(parents=True)
    (broken / "00000000000000000000.json").write_text("not a delta log\n")
    failed = dg.materialize([raw_events, assets.curated_cases], selection=[CURATED_CASES], partition_key=day,
                            resources={"delta": DeltaLakeStorage(root=str(tmp_path / "delta"))},
                            instance=instance, raise_on_error=False)
    assert not failed.success

    second = _evaluate(instance, cursor=first.cursor)
    assert second.total_requested == 0  # no retry loop

    _ingest(instance, day)  # a new batch of that day
    third = _evaluate(instance, cursor=second.cursor)
    assert third.get_requested_partitions(CURATED_CASES) == {day}


def test_a_day_whose_curated_check_failed_is_not_enriched(instance, tmp_path, monkeypatch):
    import json

    from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_sample_data
    from tests.support.pipeline import write_raw_events

    monkeypatch.setenv("SAMPLE_DATA_DIR", str(tmp_path / "sample_data"))
    generate_sample_data(tmp_path / "sample_data", n_events=300)
    delta = DeltaLakeStorage(root=str(tmp_path / "delta"))
    bad_day, good_day = sorted(write_raw_events(delta, tmp_path / "sample_data"))[:2]
    bad_event = delta.read(RAW_EVENTS, partition_column="event_date", partition_values=[bad_day])["event_id"][0]
    with (tmp_path / "sample_data" / "exceptions.jsonl").open("a") as f:  # breaks the contract on bad_day only
        f.write(json.dumps({"event_id": bad_event, "is_exception": True, "exception_type": "none"}) + "\n")
    assert dg.materialize([assets.entity_signals, assets.upstream_exceptions], resources={"delta": delta}).success
    curated = dg.materialize(
        [raw_events, assets.curated_cases], selection=[CURATED_CASES], resources={"delta": delta},
        instance=instance, raise_on_error=False,  # one run over both days, as a sensor batch would be
        tags={"dagster/asset_partition_range_start": bad_day, "dagster/asset_partition_range_end": good_day})
    assert not curated.success  # the blocking contract check failed on bad_day

    # Stands for enriched/cases (its resources are not under test); the sample days lie in the past.
    lookback = (date.fromisoformat(_day(0)) - date.fromisoformat(bad_day)).days + 2

    @dg.asset(key=["enriched", "stand_in"], deps=[CURATED_CASES], partitions_def=daily_partitions,
              automation_condition=build_daily_derived(lookback_days=lookback))
    def enriched_stand_in() -> None: ...

    defs = dg.Definitions(assets=[raw_events, assets.entity_signals, assets.upstream_exceptions,
                                  assets.curated_cases, enriched_stand_in], resources=UNUSED)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                               asset_selection=dg.AssetSelection.assets(enriched_stand_in))

    assert result.get_requested_partitions(enriched_stand_in.key) == {good_day}


def test_the_code_location_applies_the_lookback_condition_to_the_daily_derived_assets(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_HOME", str(tmp_path))
    from llm_assets.asset_keys import ENRICHED_CASES
    from llm_assets.definitions import defs

    for key in (CURATED_CASES, ENRICHED_CASES):
        condition = defs.get_assets_def(key).automation_conditions_by_key[key]
        # enriched/cases ORs it with the re-enrichment after a promotion (tests/enrichment/test_production_follow.py).
        labels = {condition.get_label(), *(child.get_label() for child in condition.children)}
        assert f"daily_derived(lookback={DEFAULT_LOOKBACK_DAYS}d)" in labels, key
