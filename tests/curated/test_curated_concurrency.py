"""`curated/cases` and its checks while ingest keeps MERGEing into the same day of `raw/events`.

The checks judge the Delta versions the run read and wrote, so ingest commits that land during
a run cannot fail them (they failed 3 times in 18 when the checks read the latest raw table).
"""

import threading

import dagster as dg
import polars as pl
import pytest
from deltalake.exceptions import CommitFailedError, DeltaError

from llm_assets.asset_keys import CURATED_CASES, ENTITY_SIGNALS, EXCEPTIONS, RAW_EVENTS
from llm_assets.curated import assets, joining
from llm_assets.partitions import daily_partitions
from tests.support.pipeline import write_raw_events

pytestmark = pytest.mark.integration

INGEST_BATCHES = 20
NEW_PER_BATCH = 15
CHANGED_PER_BATCH = 2
MAX_COMMIT_ATTEMPTS = 200

RAW_EVENTS_SPEC = dg.AssetSpec(RAW_EVENTS, partitions_def=daily_partitions)


def _batches(base: pl.DataFrame) -> list[pl.DataFrame]:
    """Micro-batches of one day: new events, and re-deliveries of earlier events with new content."""
    batches = []
    for b in range(INGEST_BATCHES):
        new = base.sample(NEW_PER_BATCH, seed=b).with_columns(
            (pl.col("event_id") + f"-b{b}").alias("event_id"))
        changed = base.slice(b * CHANGED_PER_BATCH, CHANGED_PER_BATCH).with_columns(
            (pl.col("payload_raw") + f" (corrected in batch {b})").alias("payload_raw"))
        batches.append(pl.concat([new, changed]))
    return batches


def _ingest(delta, day: str, batch: pl.DataFrame, start: threading.Barrier, errors: list) -> None:
    """One ingest run's MERGE into raw/events; a commit that loses the race to another one is retried."""
    start.wait()
    for _ in range(MAX_COMMIT_ATTEMPTS):
        try:
            delta.merge(RAW_EVENTS, batch, ["event_id"], partition_column="event_date", partition_value=day)
            return
        except (CommitFailedError, DeltaError) as exc:  # concurrent MERGEs into one partition conflict
            last = exc
    errors.append(last)


def test_curated_checks_never_fail_while_ingest_writes_the_same_day(curated_home, delta):
    day = sorted(write_raw_events(delta, curated_home / "sample_data"))[0]
    assert dg.materialize([assets.entity_signals, assets.upstream_exceptions], resources={"delta": delta}).success
    base = delta.read(RAW_EVENTS, partition_column="event_date", partition_values=[day])
    instance = dg.DagsterInstance.ephemeral()

    start, errors = threading.Barrier(INGEST_BATCHES + 1), []
    writers = [threading.Thread(target=_ingest, args=(delta, day, batch, start, errors))
               for batch in _batches(base)]
    for writer in writers:
        writer.start()
    start.wait()
    runs = []  # (result, raw version after the run)
    while any(w.is_alive() for w in writers) or len(runs) < 3:
        result = dg.materialize([RAW_EVENTS_SPEC, assets.curated_cases], selection=[CURATED_CASES],
                                partition_key=day, resources={"delta": delta}, instance=instance,
                                raise_on_error=False)
        runs.append((result, delta.version(RAW_EVENTS)))
    for writer in writers:
        writer.join()
    assert not errors, errors

    signals, exceptions = delta.read(ENTITY_SIGNALS), delta.read(EXCEPTIONS)
    overlapped = 0
    for result, raw_version_after in runs:
        failed = [(e.check_name, e.metadata) for e in result.get_asset_check_evaluations() if not e.passed]
        assert result.success and not failed, failed
        (evaluation, *_) = result.get_asset_check_evaluations()
        raw_version = evaluation.metadata["raw_events_version"].value
        curated_version = evaluation.metadata["curated_cases_version"].value
        overlapped += raw_version_after > raw_version  # ingest committed while this run ran
        # Correct for what it read: the cases of the raw rows at the version read, as a fresh curation.
        raw = delta.read(RAW_EVENTS, partition_column="event_date", partition_values=[day], version=raw_version)
        expected = joining.curate_cases(raw, signals, exceptions)
        curated = delta.read(CURATED_CASES, partition_column="event_date", partition_values=[day],
                             version=curated_version)
        assert curated.select(expected.columns).sort("event_id").equals(expected)
    assert overlapped, "no curated run overlapped an ingest commit: the test proved nothing"

    final = delta.read(RAW_EVENTS, partition_column="event_date", partition_values=[day])
    assert final.height == base.height + INGEST_BATCHES * NEW_PER_BATCH
    last = dg.materialize([RAW_EVENTS_SPEC, assets.curated_cases], selection=[CURATED_CASES], partition_key=day,
                          resources={"delta": delta}, instance=instance)
    assert last.success
    curated = delta.read(CURATED_CASES, partition_column="event_date", partition_values=[day])
    assert curated.select(joining.CURATED_COLUMNS).sort("event_id").equals(
        joining.curate_cases(final, signals, exceptions))
