"""What `kafka_events_sensor` relies on: Dagster's partition-range run tags mean "run exactly this range".

The sensor requests one run per batch over a range of daily partitions by setting
`dagster/asset_partition_range_start|end` (the tags a single-run backfill sets). If a Dagster
upgrade changed what they mean, the ingest would silently write the wrong partitions; this
test launches runs with those tags, through the same job machinery a daemon uses, and fails then.
"""

import dagster as dg
import pytest

from llm_assets.partitions import daily_partitions
from llm_assets.sensors.kafka_events import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG

pytestmark = pytest.mark.unit


@dg.asset(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run())
def range_probe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Records the partition keys its run covers."""
    return dg.MaterializeResult(metadata={"partition_keys": ",".join(context.partition_keys)})


def probe_job() -> dg.JobDefinition:
    defs = dg.Definitions(assets=[range_probe], jobs=[dg.define_asset_job("range_probe_job", [range_probe],
                                                                          executor_def=dg.in_process_executor)])
    return defs.resolve_job_def("range_probe_job")


def _materialized(instance: dg.DagsterInstance, run_id: str) -> tuple[set[str], set[str]]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    partitions = {r.event_log_entry.dagster_event.partition for r in records}
    keys = {k for r in records
            for k in r.event_log_entry.asset_materialization.metadata["partition_keys"].value.split(",")}
    return partitions, keys


def test_a_launched_run_with_the_range_tags_executes_exactly_that_range(tmp_path):
    expected = {"2026-11-17", "2026-11-18", "2026-11-19"}
    tags = {PARTITION_RANGE_START_TAG: "2026-11-17", PARTITION_RANGE_END_TAG: "2026-11-19"}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        # As the daemon launches a sensor's RunRequest: a run record with the tags, then a worker executing it.
        with dg.execute_job(dg.reconstructable(probe_job), instance=instance, tags=tags) as result:
            assert result.success
            assert _materialized(instance, result.run_id) == (expected, expected)
            assert result.dagster_run.tags[PARTITION_RANGE_START_TAG] == "2026-11-17"


def test_the_sensor_s_request_shape_is_read_as_that_range():
    request = dg.RunRequest(run_key="k", tags={PARTITION_RANGE_START_TAG: "2026-11-18",
                                               PARTITION_RANGE_END_TAG: "2026-11-20"})
    assert request.partition_key_range == dg.PartitionKeyRange("2026-11-18", "2026-11-20")
    instance = dg.DagsterInstance.ephemeral()
    result = probe_job().execute_in_process(tags=request.tags, instance=instance)  # as `drain_topic` runs it
    expected = {"2026-11-18", "2026-11-19", "2026-11-20"}
    assert _materialized(instance, result.run_id) == (expected, expected)
