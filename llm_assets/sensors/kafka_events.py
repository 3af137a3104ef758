"""`kafka_events_sensor`: turns new `events.raw` offsets into `raw/events` runs, one per batch.

Each tick (bounded by `max_messages` and a time budget, well under Dagster's 60 s):

1. reads the topic's partitions and topic id (short timeouts: a broker that does not
   answer is a `SkipReason`, never a hung tick);
2. commits to the consumer group the offsets of the earlier batches whose runs have all
   succeeded, oldest first;
3. reads new messages through `KafkaResource.read` (`assign()` + seek from the cursor's
   offsets, no group join, chunk by chunk so memory stays bounded) and learns each
   message's `event_date` with `contract.validate_values`, the very decision the run makes.
   It then requests ONE `ingest_events_job` run per batch whose `raw/events` partition key
   range covers the touched dates (`dagster/asset_partition_range_start|end` tags; a single
   date is a plain `partition_key`). That run is the hot path: ingest, then `curated/cases`
   and `enriched/cases` of the same dates (only the new cases, published to
   `cases.enriched`), with the blocking checks of `raw/events` and `curated/cases` stopping
   enrichment in the run. Dates more than `max_date_gap_days` apart (a late event of last
   month) get a run of their own, reading only the offsets that hold them and selecting
   the same path without `raw/rejected_events`: automation's lookback does not reach them. The main run reads the whole batch once and also writes its
   invalid messages to `raw/rejected_events`; a batch without a valid message is one
   `ingest_rejected_events_job` run. Run config holds the offset ranges, never payloads;
   run keys are unique per batch and run (`events.raw:g0:p0:100-200:2026-11-17..2026-11-18`);
4. reports consumer lag per partition as an `AssetObservation` of `raw/events`.

Commit policy: the sensor, not the run, commits. A batch may need several runs; only the
sensor sees all of them, and it commits strictly in batch order, so the group never claims
an offset whose messages are not written. A failed run keeps its batch (and every later one)
uncommitted until a re-execution of it succeeds; once `max_pending_batches` batches wait,
the sensor stops reading (back-pressure) and says why.

At most one batch waiting: while a run of an earlier batch is still queued (not started), a
tick reads nothing (it still commits what finished). The sensor's runs go one at a time
(`dagster.yaml`), so reading on would queue small batches behind each other, each paying a
run's fixed cost, and latency would grow without bound whenever a run outlasts the tick
interval; waiting makes the next batch take everything that arrived meanwhile. While a run
is already running, the next batch is read and queued behind it, so an event waits for at
most one run ahead of its own.

Recovery policy when the log restarts (RESET_TO_EARLIEST): when the topic id changed
(topic deleted and recreated) or a cursor offset lies beyond the log end (log truncated),
the sensor says so, bumps the cursor's generation (so no run key is ever reused), drops
the pending batches of the old log and reads the affected partitions again from their
earliest offset. MERGE on `event_id` makes the re-read harmless: nothing is written twice.

Settings (topic, limits, timeouts, payload limit) come from the `kafka_ingest` resource
(`KafkaIngestSettings`), bound per environment in `resources/environments.py`.
"""

import time
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from llm_assets.asset_keys import ENRICHED_CASES, RAW_EVENTS
from llm_assets.metadata import MICRO_BATCH_TAG
from llm_assets.ingest import contract
from llm_assets.ingest.assets import (
    HOT_PATH_DOWNSTREAM,
    current_partition_window,
    ingest_events_job,
    ingest_kafka_batch,
    ingest_rejected_events_job,
)
from llm_assets.ingest.batches import (
    REJECTED,
    IngestCursor,
    PendingBatch,
    PlannedRun,
    offsets_to_commit,
    plan_batch,
    ranges_text,
    retry_delay_s,
    run_key,
)
from llm_assets.resources.kafka import KafkaIngestSettings, KafkaResource, KafkaUnavailableError, TopicNotFoundError

# Dagster's tags for a run over a partition key range (what a single-run backfill sets);
# tests/ingest/test_partition_range_tags.py fails if Dagster changes what they mean.
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
BATCH_TAG = MICRO_BATCH_TAG  # what the hot path reads to keep its metadata small (metadata.py)
# A run in one of these states still has its batch to write: the sensor reads nothing new meanwhile.
IN_FLIGHT = frozenset({dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                       dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.MANAGED, dg.DagsterRunStatus.CANCELING})
NOT_STARTED = frozenset({dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED})
READ_CHUNK = 50_000  # messages dated per `validate_values` call (its cost is mostly per call below this)
RUN_KEY_TAG = "llm_assets/kafka_run_key"
ATTEMPT_TAG = "llm_assets/kafka_attempt"  # the sensor's request number of a run key (absent: the first)
WILL_RETRY_TAG = "dagster/will_retry"  # set by Dagster on a failed run: "true" when run retries will re-execute it
# A far-apart date's run: the hot path without the dead letter (the batch's main run writes it).
LATE_DATE_SELECTION = (RAW_EVENTS, *HOT_PATH_DOWNSTREAM)
# Seconds between ticks: a batch's cases reach cases.enriched within about one interval plus one run.
TICK_INTERVAL_S = 10
TOPIC_TAG = "llm_assets/kafka_topic"


@dataclass
class TickRead:
    """What one tick read, per message: partition, offset and `event_date` (null: invalid)."""

    dated: pl.DataFrame
    next_offsets: dict[int, int] = field(default_factory=dict)
    high_watermarks: dict[int, int] = field(default_factory=dict)
    beyond_end: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (cursor, log end)
    errors: list[str] = field(default_factory=list)
    stopped_by: str = "caught up"


def read_new_messages(kafka: KafkaResource, settings: KafkaIngestSettings, partitions: list[int],
                      start_offsets: dict[int, int], deadline: float, window: contract.PartitionWindow) -> TickRead:
    """Read from `start_offsets` (earliest where absent) until caught up, a limit, or the deadline."""
    read = kafka.read(settings.topic, {p: start_offsets.get(p) for p in partitions}, chunk_size=READ_CHUNK,
                      max_messages=settings.max_messages, deadline=deadline, idle_timeout_s=settings.idle_timeout_s,
                      # before the first answer, allow for the offset lookup (about 0.6 s on tansu)
                      first_answer_timeout_s=settings.connect_timeout_s)
    frames = []
    for chunk in read:
        checked = contract.validate_values(
            chunk.values, max_payload_bytes=contract.current_max_payload_bytes(settings.max_payload_bytes),
            window=window, columns=("event_date",))
        dates = pl.repeat(None, len(chunk.offsets), dtype=pl.String, eager=True).scatter(
            checked.events["position"], checked.events["event_date"])
        frames.append(pl.DataFrame({"partition": pl.Series(chunk.partitions, dtype=pl.Int64),
                                    "offset": pl.Series(chunk.offsets, dtype=pl.Int64), "event_date": dates}))
    progress = read.progress
    dated = pl.concat(frames) if frames else pl.DataFrame(
        schema={"partition": pl.Int64, "offset": pl.Int64, "event_date": pl.String})
    tick = TickRead(dated=dated, next_offsets={**start_offsets, **progress.next_offsets},
                    high_watermarks=progress.high_watermarks, errors=progress.errors,
                    stopped_by=_stopped_by(progress.stopped_by, settings))
    for p, high in progress.high_watermarks.items():
        cursor_at = start_offsets.get(p)
        if cursor_at is not None and cursor_at > high and p not in progress.at_end \
                and tick.next_offsets.get(p) == cursor_at:
            tick.beyond_end[p] = (cursor_at, high)
    return tick


def _stopped_by(reason: str, settings: KafkaIngestSettings) -> str:
    return f"time budget ({settings.time_budget_s:g}s)" if reason == "time budget" else reason


def _run_config(settings: KafkaIngestSettings, ranges: dict[int, tuple[int, int]], last_partition_date: str) -> dict:
    return {"ops": {ingest_kafka_batch.op.name: {"config": {
        "topic": settings.topic,
        "ranges": [{"partition": p, "start": s, "end": e} for p, (s, e) in sorted(ranges.items())],
        "max_payload_bytes": contract.current_max_payload_bytes(settings.max_payload_bytes),
        "last_partition_date": last_partition_date,
    }}}}


@dataclass(frozen=True)
class HotPath:
    """What a batch's run selects: the assets of `ingest_events_job` as this code location holds it
    (the ingest domain's own definitions, in tests and the demo's emulation, hold only its ingest
    assets) and the checks it plans: all but those of `enriched/cases`. Those are evaluated in the
    step all the same and recorded per date when it yields them, but never planned: a planned check
    reads "In Progress" in the UI for as long as its run is in flight, and with a micro-batch every
    few seconds that would be most of the time. (Nothing downstream of enriched/cases runs in the
    batch's run, so planning them would block nothing; automation reads their evaluations.)"""

    assets: list[dg.AssetKey] | None = None  # None: the whole job, its checks planned (no definitions known)
    checks: list[dg.AssetCheckKey] | None = None

    def late(self) -> tuple[list[dg.AssetKey], list[dg.AssetCheckKey] | None]:
        """A far-apart date's run: the hot path without the dead letter."""
        held = self.assets if self.assets is not None else list(LATE_DATE_SELECTION)
        assets = [key for key in LATE_DATE_SELECTION if key in held]
        return assets, None if self.checks is None else [c for c in self.checks if c.asset_key in assets]


def hot_path(context: dg.SensorEvaluationContext) -> HotPath:
    if context.repository_def is None:
        return HotPath()
    layer = context.repository_def.get_job(ingest_events_job.name).asset_layer
    assets = sorted(layer.selected_asset_keys, key=lambda k: k.to_user_string())
    checks = sorted((c for c in layer.asset_graph.asset_check_keys
                     if c.asset_key in assets and c.asset_key != ENRICHED_CASES), key=lambda c: c.to_user_string())
    return HotPath(assets, checks)


def _run_request(run: PlannedRun, key: str, settings: KafkaIngestSettings, last_partition_date: str,
                 tags: dict[str, str], path: HotPath) -> dg.RunRequest:
    """The run of one planned date range (or of the dead letters alone)."""
    tags = {**tags, RUN_KEY_TAG: key}
    config = _run_config(settings, run.ranges, last_partition_date)
    if run.first_date is None:
        return dg.RunRequest(run_key=key, job_name=ingest_rejected_events_job.name, run_config=config, tags=tags)
    # The main run writes the batch's dead letters; a late date's run re-reads only its offsets.
    partition_key = None
    if run.first_date == run.last_date:
        partition_key = run.first_date
    else:
        tags.update({PARTITION_RANGE_START_TAG: run.first_date, PARTITION_RANGE_END_TAG: run.last_date})
    assets, checks = (path.assets, path.checks) if run.dead_letters else path.late()
    return dg.RunRequest(run_key=key, job_name=ingest_events_job.name, partition_key=partition_key,
                         run_config=config, tags=tags, asset_selection=assets, asset_check_keys=checks)


@dataclass
class FailedRun:
    """A run key of a pending batch whose runs all failed, with no retry by Dagster to come."""

    batch_id: str
    key: str
    run: dg.DagsterRun      # the latest of them: what a new request repeats
    ended_at: float         # when it ended (Unix time)


@dataclass
class BatchRuns:
    """Where the runs of the pending batches stand."""

    finished: set[str] = field(default_factory=set)  # batch ids whose every run key has a successful run
    failed: list[FailedRun] = field(default_factory=list)  # run keys whose runs failed for good (no retry coming)
    in_flight: list[str] = field(default_factory=list)  # run keys with a run queued, starting, running or retrying
    not_started: list[str] = field(default_factory=list)  # run keys whose run still waits in the queue


def pending_batch_runs(instance: dg.DagsterInstance, cursor: IngestCursor) -> BatchRuns:
    """The state of the runs of every pending batch (one run query per pending batch).

    A run key's runs are the sensor's requests of it and Dagster's retries of those (they copy the
    tags): one success finishes it; a failed run that Dagster will retry (`dagster/will_retry`)
    still counts as in flight; failed with nothing to come, it is the sensor's to request again.
    """
    state = BatchRuns()
    for batch in cursor.pending:
        records = instance.get_run_records(filters=dg.RunsFilter(tags={BATCH_TAG: batch.batch_id}))
        by_key: dict[str, list] = {}
        for record in records:
            by_key.setdefault(record.dagster_run.tags.get(RUN_KEY_TAG), []).append(record)
        succeeded = set()
        for key in batch.run_keys:
            runs = sorted(by_key.get(key, []), key=lambda r: r.create_timestamp.timestamp())
            statuses = {r.dagster_run.status for r in runs}
            if dg.DagsterRunStatus.SUCCESS in statuses:
                succeeded.add(key)
            elif statuses & IN_FLIGHT:
                state.in_flight.append(key)
                if statuses & NOT_STARTED:
                    state.not_started.append(key)
            elif runs and runs[-1].dagster_run.tags.get(WILL_RETRY_TAG) == "true":
                state.in_flight.append(key)  # Dagster's run retry is about to start
            elif runs:
                latest = runs[-1]
                ended = latest.end_time or latest.update_timestamp.timestamp()
                state.failed.append(FailedRun(batch.batch_id, key, latest.dagster_run, ended))
        if set(batch.run_keys) <= succeeded:
            state.finished.add(batch.batch_id)
    return state


def _repeat(failed: FailedRun, attempt: int) -> dg.RunRequest:
    """A new run of a failed run key: same job, partition (range), selection and config; a new run key."""
    run = failed.run
    tags = {k: v for k, v in run.tags.items() if not k.startswith("dagster/")
            or k in (PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG)}
    tags[ATTEMPT_TAG] = str(attempt)
    return dg.RunRequest(run_key=f"{failed.key}#attempt{attempt}", job_name=run.job_name,
                         run_config=dict(run.run_config), tags=tags,
                         partition_key=run.tags.get("dagster/partition"),
                         asset_selection=list(run.asset_selection) if run.asset_selection else None,
                         asset_check_keys=(list(run.asset_check_selection) if run.asset_check_selection is not None
                                           else None))


def request_failed_again(cursor: IngestCursor, runs: BatchRuns, settings: KafkaIngestSettings,
                         now: float, notes: list[str]) -> tuple[IngestCursor, list[dg.RunRequest]]:
    """Request again each run key that failed for good, after a doubling backoff (none after a
    cancellation), up to `max_batch_attempts` runs; raises once a key has used them all (the tick
    fails, loudly)."""
    requests = []
    attempts = {b.batch_id: dict(b.attempts) for b in cursor.pending}
    exhausted = []
    for failed in runs.failed:
        made = attempts[failed.batch_id].get(failed.key, 1)
        if made >= settings.max_batch_attempts:
            exhausted.append(failed)
            continue
        # A canceled run (a stop of `make dev`, a person in the UI) failed at nothing: its batch is taken again at once.
        backoff = 0.0 if failed.run.status == dg.DagsterRunStatus.CANCELED else retry_delay_s(made, settings.retry_backoff_s)
        wait = failed.ended_at + backoff - now
        if wait > 0:
            notes.append(f"run {failed.run.run_id} of {failed.key} failed (attempt {made} of "
                         f"{settings.max_batch_attempts}); requesting it again in {wait:.0f}s")
            continue
        attempts[failed.batch_id][failed.key] = made + 1
        requests.append(_repeat(failed, made + 1))
        notes.append(f"run {failed.run.run_id} of {failed.key} failed; requesting attempt {made + 1} of "
                     f"{settings.max_batch_attempts}")
    if exhausted:
        names = "; ".join(f"{f.key} (last run {f.run.run_id})" for f in exhausted[:3])
        raise BatchFailedError(
            f"{len(exhausted)} batch run(s) failed {settings.max_batch_attempts} times: {names}. Their offsets stay "
            f"uncommitted and the sensor reads nothing more until they succeed: fix the cause (the run's log says "
            f"it), then re-execute the last run from the Runs page; the next tick goes on.")
    cursor = cursor.model_copy(update={"pending": [b.model_copy(update={"attempts": attempts[b.batch_id]})
                                                   for b in cursor.pending]})
    return cursor, requests


class BatchFailedError(RuntimeError):
    """A batch's run failed `max_batch_attempts` times: the sensor's ticks fail until it succeeds."""


def _commit_finished(context: dg.SensorEvaluationContext, kafka: KafkaResource, cursor: IngestCursor,
                     settings: KafkaIngestSettings, runs: BatchRuns, notes: list[str]) -> IngestCursor:
    if not cursor.pending:
        return cursor
    finished = runs.finished
    offsets, done = offsets_to_commit(cursor, finished)
    if not done:
        return cursor
    try:
        kafka.commit_offsets(settings.consumer_group, settings.topic, offsets)
    except Exception as exc:  # noqa: BLE001 - a failed commit is retried on the next tick
        notes.append(f"committing offsets to {settings.consumer_group} failed, retrying next tick: {exc}")
        return cursor
    context.log.info(f"committed {ranges_text({p: (0, o) for p, o in offsets.items()})} "
                     f"to {settings.consumer_group} for {done} finished batch(es)")
    return cursor.model_copy(update={"pending": cursor.pending[done:],
                                     "committed": {**cursor.committed, **offsets}})


def _lag_observation(read: TickRead, cursor: IngestCursor, messages: int) -> dg.AssetObservation:
    metadata: dict[str, object] = {"topic": cursor.topic, "messages_this_tick": messages,
                                   "pending_batches": len(cursor.pending), "stopped_by": read.stopped_by}
    total = 0
    for p, high in sorted(read.high_watermarks.items()):
        lag = max(0, high - cursor.next_offsets.get(p, 0))
        total += lag
        metadata[f"consumer_lag/p{p}"] = lag
        metadata[f"next_offset/p{p}"] = cursor.next_offsets.get(p, 0)
    metadata["consumer_lag_total"] = total
    return dg.AssetObservation(asset_key=RAW_EVENTS, metadata=metadata)


def evaluate_kafka_tick(context: dg.SensorEvaluationContext, kafka: KafkaResource,
                        settings: KafkaIngestSettings) -> dg.SensorResult | dg.SkipReason:
    """One sensor tick (see the module docstring)."""
    deadline = time.monotonic() + settings.time_budget_s
    topic = settings.topic
    cursor = IngestCursor.parse(context.cursor, topic)
    try:
        partitions = kafka.topic_partitions(topic, timeout_s=settings.connect_timeout_s)
        topic_id = kafka.topic_id(topic, timeout_s=settings.connect_timeout_s)
    except KafkaUnavailableError as exc:
        return dg.SkipReason(f"{exc}. Cursor kept; retrying next tick.")
    except TopicNotFoundError as exc:
        return dg.SkipReason(f"{exc}; waiting for it to be created (create it explicitly with its partitions).")

    notes: list[str] = []
    if cursor.topic_id is not None and topic_id != cursor.topic_id:
        notes.append(f"topic {topic} was recreated (topic id {cursor.topic_id} -> {topic_id}): reading the new "
                     f"log from its earliest offset; {len(cursor.pending)} pending batch(es) of the old log dropped")
        cursor = cursor.restart_log(topic_id)
    elif cursor.topic_id is None:
        cursor = cursor.model_copy(update={"topic_id": topic_id})

    runs = pending_batch_runs(context.instance, cursor) if cursor.pending else BatchRuns()
    cursor = _commit_finished(context, kafka, cursor, settings, runs, notes)
    cursor, repeated = request_failed_again(cursor, runs, settings, time.time(), notes)
    if repeated:  # a failed batch comes first: nothing newer is read in this tick
        for note in notes:
            context.log.warning(note)
        return dg.SensorResult(run_requests=repeated, cursor=cursor.dump())
    if runs.not_started:
        # At most one batch in the queue: the runs of this sensor go one by one (dagster.yaml), so a
        # batch read now would wait behind the queued one, and the next one behind it, every tick
        # adding a run's fixed cost (process start, imports). Waiting instead lets the next tick take
        # everything that arrived meanwhile as one batch: an event waits for at most one run ahead
        # of its own, whatever the rate.
        notes.append(f"waiting for {len(runs.not_started)} queued run(s) of earlier batches to start before "
                     f"reading more: {', '.join(runs.not_started[:3])}")
        return dg.SensorResult(skip_reason=" ".join(notes), cursor=cursor.dump())
    if len(cursor.pending) >= settings.max_pending_batches:
        notes.append(f"{len(cursor.pending)} batches are waiting for their runs (limit {settings.max_pending_batches});"
                     f" not reading more until they succeed")
        return dg.SensorResult(skip_reason=" ".join(notes), cursor=cursor.dump())

    window = current_partition_window()  # one window per batch: the sensor and every re-run agree
    try:
        with contract.gc_paused():  # 100k messages read in bulk: no cyclic garbage, no GC passes
            read = read_new_messages(kafka, settings, partitions, cursor.next_offsets, deadline, window)
    except Exception as exc:  # noqa: BLE001 - any client failure: keep the cursor, say why
        return dg.SensorResult(skip_reason=f"reading {topic} failed: {exc}. Cursor kept; retrying next tick.",
                               cursor=cursor.dump())
    if read.beyond_end:
        where = ", ".join(f"p{p} (cursor {c}, log ends at {e})" for p, (c, e) in sorted(read.beyond_end.items()))
        notes.append(f"cursor beyond the log end of {topic} on {where}: the log was truncated or recreated; "
                     f"reading those partitions again from their earliest offset")
        cursor = cursor.restart_log(topic_id, partitions=read.beyond_end)
        read.next_offsets = {p: o for p, o in read.next_offsets.items() if p not in read.beyond_end}
    for note in notes:
        context.log.warning(note)

    if read.dated.is_empty():
        cursor = cursor.model_copy(update={"next_offsets": read.next_offsets})
        offsets = ", ".join(f"p{p}:{cursor.next_offsets.get(p, 0)}" for p in partitions)
        errors = f" Errors: {'; '.join(read.errors[:3])}." if read.errors else ""
        waiting = f" {len(cursor.pending)} batch(es) waiting for their runs." if cursor.pending else ""
        reason = " ".join([*notes, f"No new messages on {topic} (next offsets {offsets}).{waiting}{errors}"])
        return dg.SensorResult(skip_reason=reason, cursor=cursor.dump(),
                               asset_events=[_lag_observation(read, cursor, 0)])

    plan = plan_batch(read.dated["partition"], read.dated["offset"], read.dated["event_date"],
                      settings.max_date_gap_days)
    generation = cursor.generation
    batch_id = f"{topic}:g{generation}:{ranges_text(plan.read)}"
    last_partition_date = window.last.isoformat()
    tags = {BATCH_TAG: batch_id, TOPIC_TAG: topic}
    path = hot_path(context)
    run_requests = [_run_request(run, run_key(topic, generation, run.ranges, run.target), settings,
                                 last_partition_date, tags, path) for run in plan.runs]

    cursor = cursor.model_copy(update={
        "next_offsets": read.next_offsets,
        "pending": [*cursor.pending, PendingBatch(batch_id=batch_id, run_keys=[r.run_key for r in run_requests],
                                                  next_offsets={p: e for p, (_s, e) in plan.read.items()},
                                                  requested_at=time.time())],
    })
    dates = len(plan.counts) - (REJECTED in plan.counts)
    context.log.info(f"{plan.message_count} messages ({ranges_text(plan.read)}), stopped by {read.stopped_by}: "
                     f"{dates} date(s), {plan.counts.get(REJECTED, 0)} invalid -> "
                     f"{', '.join(r.target for r in plan.runs)}")
    return dg.SensorResult(run_requests=run_requests, cursor=cursor.dump(),
                           asset_events=[_lag_observation(read, cursor, plan.message_count)])


@dg.sensor(name="kafka_events_sensor", jobs=[ingest_events_job, ingest_rejected_events_job],
           minimum_interval_seconds=TICK_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
           description="New events.raw offsets (the topic of the `kafka_ingest` resource) -> one run per batch over "
                       "the touched event_date range: raw/events + raw/rejected_events, then curated/cases and "
                       "enriched/cases of those dates in the same run; commits offsets after the runs succeed.")
def kafka_events_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource, kafka_ingest: KafkaIngestSettings):
    return evaluate_kafka_tick(context, kafka, kafka_ingest)
