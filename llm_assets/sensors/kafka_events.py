"""`kafka_events_sensor`: turns new `events.raw` offsets into `raw/events` runs, one per batch.

Each tick (bounded by `max_messages` and a time budget, well under Dagster's 60 s):

1. reads the topic's partitions and topic id (short timeouts: a broker that does not
   answer is a `SkipReason`, never a hung tick);
2. commits to the consumer group (`CONSUMER_GROUP`) the offsets of the earlier batches
   whose runs have all succeeded, oldest first;
3. reads new messages with `assign()` + seek from the cursor's offsets (no group join) and
   learns each message's `event_date` with `contract.event_dates` (for every valid message
   the date the run's validation gives, found by a vectorized scan instead of a parse). It
   then requests ONE `ingest_events_job` run per batch whose `raw/events` partition key
   range covers the touched dates (`dagster/asset_partition_range_start|end` tags; a single
   date is a plain `partition_key`); dates more than `max_date_gap_days` apart (a late event
   of last month) get a run of their own, selecting `raw/events` only and reading only the
   offsets that hold them. The main run reads the whole batch once and also writes its
   invalid messages to `raw/rejected_events`; a batch without a dated message is one
   `ingest_rejected_events_job` run. Run config holds the offset ranges, never payloads;
   run keys are unique per batch and run (`events.raw:g0:p0:100-200:2026-11-17..2026-11-18`);
4. reports consumer lag per partition as an `AssetObservation` of `raw/events`.

Commit policy: the sensor, not the run, commits. A batch may need several runs; only the
sensor sees all of them, and it commits strictly in batch order, so the group never claims
an offset whose messages are not written. A failed run keeps its batch (and every later one)
uncommitted until a re-execution of it succeeds; once `max_pending_batches` batches wait,
the sensor stops reading (back-pressure) and says why.

Recovery policy when the log restarts (RESET_TO_EARLIEST): when the topic id changed
(topic deleted and recreated) or a cursor offset lies beyond the log end (log truncated),
the sensor says so, bumps the cursor's generation (so no run key is ever reused), drops
the pending batches of the old log and reads the affected partitions again from their
earliest offset. MERGE on `event_id` makes the re-read harmless: nothing is written twice.

tansu quirk: uncached watermark offsets are wrong there, so progress comes from the offsets
consumed; lag uses the high watermark cached from the fetch responses.

Settings come from the environment (`KafkaSensorSettings.from_env`): `KAFKA_EVENTS_TOPIC`,
`KAFKA_SENSOR_MAX_MESSAGES`, `KAFKA_SENSOR_TIME_BUDGET_S`, `KAFKA_SENSOR_MAX_PENDING_BATCHES`,
`KAFKA_SENSOR_MAX_DATE_GAP_DAYS`, `KAFKA_MAX_PAYLOAD_BYTES`.
"""

import os
import time
from dataclasses import dataclass, field

import dagster as dg
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from llm_assets.ingest import contract
from llm_assets.ingest.assets import (
    RAW_EVENTS,
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
    run_key,
)
from llm_assets.resources.kafka import KafkaResource, KafkaUnavailableError, TopicNotFoundError
from llm_assets.settings import CONSUMER_GROUP, EVENTS_TOPIC

# Dagster's tags for a run over a partition key range (what a single-run backfill sets).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
BATCH_TAG = "llm_assets/kafka_batch"
DATING_CHUNK = 50_000  # messages dated per `contract.event_dates` call (its cost is mostly per call below this)
RUN_KEY_TAG = "llm_assets/kafka_run_key"
TOPIC_TAG = "llm_assets/kafka_topic"


@dataclass(frozen=True)
class KafkaSensorSettings:
    topic: str = EVENTS_TOPIC
    max_messages: int = 250_000  # one run per batch costs a run launch (a pod on k8s): keep batches large
    time_budget_s: float = 20.0
    idle_timeout_s: float = 1.0  # stop reading after this long without a message
    connect_timeout_s: float = 3.0
    max_pending_batches: int = 50
    max_date_gap_days: int = 3  # touched dates farther apart than this get runs of their own
    max_payload_bytes: int = contract.DEFAULT_MAX_PAYLOAD_BYTES
    consumer_group: str = CONSUMER_GROUP

    @classmethod
    def from_env(cls) -> "KafkaSensorSettings":
        env = os.environ
        return cls(
            topic=env.get("KAFKA_EVENTS_TOPIC", EVENTS_TOPIC),
            max_messages=int(env.get("KAFKA_SENSOR_MAX_MESSAGES", cls.max_messages)),
            time_budget_s=float(env.get("KAFKA_SENSOR_TIME_BUDGET_S", cls.time_budget_s)),
            max_pending_batches=int(env.get("KAFKA_SENSOR_MAX_PENDING_BATCHES", cls.max_pending_batches)),
            max_date_gap_days=int(env.get("KAFKA_SENSOR_MAX_DATE_GAP_DAYS", cls.max_date_gap_days)),
            max_payload_bytes=int(env.get("KAFKA_MAX_PAYLOAD_BYTES", cls.max_payload_bytes)),
        )


@dataclass
class TickRead:
    """What one tick read, per message: partition, offset and `event_date` (None: invalid)."""

    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    dates: list[str | None] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    high_watermarks: dict[int, int] = field(default_factory=dict)
    beyond_end: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (cursor, log end)
    errors: list[str] = field(default_factory=list)
    stopped_by: str = "caught up"


def _left_before_high_watermark(consumer, topic: str, partitions: list[int], next_offsets: dict[int, int],
                                 at_end: set[int]) -> int | None:
    """Messages between the next offsets and the high watermarks of the last fetch; None when unknown.

    Only the watermarks cached from fetch responses are used (uncached ones are wrong on tansu).
    """
    left = 0
    for p in partitions:
        if p in at_end:
            continue
        if p not in next_offsets:
            return None
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
        if high is None or high < 0:
            return None
        left += max(0, high - next_offsets[p])
    return left


def read_new_messages(kafka: KafkaResource, settings: KafkaSensorSettings, partitions: list[int],
                      start_offsets: dict[int, int], deadline: float, window: contract.PartitionWindow) -> TickRead:
    """Read from `start_offsets` (earliest where absent) until caught up, a limit, or the deadline."""
    read = TickRead(next_offsets=dict(start_offsets))
    consumer = kafka.consumer()
    try:
        consumer.assign([TopicPartition(settings.topic, p, start_offsets.get(p, OFFSET_BEGINNING))
                         for p in partitions])
        at_end: set[int] = set()
        answered = False
        undated: list[bytes | None] = []  # values read but not dated yet (dated in large vectorized chunks)
        idle_since = time.monotonic()
        while True:
            if len(read.offsets) >= settings.max_messages:
                read.stopped_by = f"max_messages ({settings.max_messages})"
                break
            if time.monotonic() >= deadline:
                read.stopped_by = f"time budget ({settings.time_budget_s:g}s)"
                break
            if at_end >= set(partitions):
                break
            # Before the first answer, allow for the offset lookup (about 0.6 s on tansu).
            idle_limit = settings.idle_timeout_s if answered else settings.connect_timeout_s
            if time.monotonic() - idle_since > idle_limit:
                read.stopped_by = f"no message for {idle_limit:g}s"
                break
            wanted = min(10_000, settings.max_messages - len(read.offsets))
            left = _left_before_high_watermark(consumer, settings.topic, partitions, read.next_offsets, at_end)
            if left == 0:
                break  # caught up with the log end of the last fetch
            # consume() waits for its count or the timeout: ask for no more than the log holds.
            messages = consumer.consume(num_messages=min(wanted, left or wanted), timeout=0.1)
            if messages:
                idle_since = time.monotonic()
                answered = True
            chunk = []
            room = settings.max_messages - len(read.offsets)
            for msg in messages:
                err = msg.error()
                if err is None:
                    if len(chunk) >= room:
                        break  # later messages stay unread, so every partition's read span is contiguous
                    if at_end:
                        at_end.discard(msg.partition())
                    chunk.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                else:
                    read.errors.append(f"p{msg.partition()}: {err.str()}")
            if chunk:
                chunk_partitions = [m.partition() for m in chunk]
                chunk_offsets = [m.offset() for m in chunk]
                read.partitions += chunk_partitions
                read.offsets += chunk_offsets
                undated += [m.value() for m in chunk]
                read.next_offsets.update({p: o + 1 for p, o in zip(chunk_partitions, chunk_offsets)})
            if len(undated) >= DATING_CHUNK:
                read.dates += contract.event_dates(undated, window=window, max_payload_bytes=settings.max_payload_bytes)
                undated = []
        if undated:
            read.dates += contract.event_dates(undated, window=window, max_payload_bytes=settings.max_payload_bytes)
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(settings.topic, p), cached=True)
            if high is None or high < 0:
                continue
            read.high_watermarks[p] = high
            cursor_at = start_offsets.get(p)
            if cursor_at is not None and cursor_at > high and p not in at_end and read.next_offsets[p] == cursor_at:
                read.beyond_end[p] = (cursor_at, high)
    finally:
        consumer.close()
    return read


def _run_config(settings: KafkaSensorSettings, ranges: dict[int, tuple[int, int]], last_partition_date: str) -> dict:
    return {"ops": {ingest_kafka_batch.op.name: {"config": {
        "topic": settings.topic,
        "ranges": [{"partition": p, "start": s, "end": e} for p, (s, e) in sorted(ranges.items())],
        "max_payload_bytes": settings.max_payload_bytes,
        "last_partition_date": last_partition_date,
    }}}}


def _run_request(run: PlannedRun, key: str, settings: KafkaSensorSettings, last_partition_date: str,
                 tags: dict[str, str]) -> dg.RunRequest:
    """The run of one planned date range (or of the dead letters alone)."""
    tags = {**tags, RUN_KEY_TAG: key}
    config = _run_config(settings, run.ranges, last_partition_date)
    if run.first_date is None:
        return dg.RunRequest(run_key=key, job_name=ingest_rejected_events_job.name, run_config=config, tags=tags)
    partition_key = None
    if run.first_date == run.last_date:
        partition_key = run.first_date
    else:
        tags.update({PARTITION_RANGE_START_TAG: run.first_date, PARTITION_RANGE_END_TAG: run.last_date})
    return dg.RunRequest(run_key=key, job_name=ingest_events_job.name, partition_key=partition_key,
                         run_config=config, tags=tags,
                         asset_selection=None if run.dead_letters else [RAW_EVENTS])


def _finished_batches(instance: dg.DagsterInstance, cursor: IngestCursor) -> tuple[set[str], list[str]]:
    """Batches whose every run key has a successful run; and the run keys whose runs failed."""
    finished: set[str] = set()
    failed: list[str] = []
    for batch in cursor.pending:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={BATCH_TAG: batch.batch_id}))
        succeeded = {r.tags.get(RUN_KEY_TAG) for r in runs if r.status == dg.DagsterRunStatus.SUCCESS}
        if set(batch.run_keys) <= succeeded:
            finished.add(batch.batch_id)
            continue
        failed += sorted({r.tags.get(RUN_KEY_TAG) for r in runs
                          if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)} - succeeded)
    return finished, failed


def _commit_finished(context: dg.SensorEvaluationContext, kafka: KafkaResource, cursor: IngestCursor,
                     settings: KafkaSensorSettings, notes: list[str]) -> IngestCursor:
    if not cursor.pending:
        return cursor
    finished, failed = _finished_batches(context.instance, cursor)
    if failed:
        notes.append(f"{len(failed)} run(s) failed, their offsets stay uncommitted until a re-execution "
                     f"succeeds: {', '.join(failed[:5])}")
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
                        settings: KafkaSensorSettings) -> dg.SensorResult | dg.SkipReason:
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

    cursor = _commit_finished(context, kafka, cursor, settings, notes)
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

    if not read.offsets:
        cursor = cursor.model_copy(update={"next_offsets": read.next_offsets})
        offsets = ", ".join(f"p{p}:{cursor.next_offsets.get(p, 0)}" for p in partitions)
        errors = f" Errors: {'; '.join(read.errors[:3])}." if read.errors else ""
        waiting = f" {len(cursor.pending)} batch(es) waiting for their runs." if cursor.pending else ""
        reason = " ".join([*notes, f"No new messages on {topic} (next offsets {offsets}).{waiting}{errors}"])
        return dg.SensorResult(skip_reason=reason, cursor=cursor.dump(),
                               asset_events=[_lag_observation(read, cursor, 0)])

    plan = plan_batch(read.partitions, read.offsets, read.dates, settings.max_date_gap_days)
    generation = cursor.generation
    batch_id = f"{topic}:g{generation}:{ranges_text(plan.read)}"
    last_partition_date = window.last.isoformat()
    tags = {BATCH_TAG: batch_id, TOPIC_TAG: topic}
    run_requests = [_run_request(run, run_key(topic, generation, run.ranges, run.target), settings,
                                 last_partition_date, tags) for run in plan.runs]

    cursor = cursor.model_copy(update={
        "next_offsets": read.next_offsets,
        "pending": [*cursor.pending, PendingBatch(batch_id=batch_id, run_keys=[r.run_key for r in run_requests],
                                                  next_offsets={p: e for p, (_s, e) in plan.read.items()},
                                                  requested_at=time.time())],
    })
    dates = len(plan.counts) - (REJECTED in plan.counts)
    context.log.info(f"{plan.message_count} messages ({ranges_text(plan.read)}), stopped by {read.stopped_by}: "
                     f"{dates} date(s), {plan.counts.get(REJECTED, 0)} unreadable or undated -> "
                     f"{', '.join(r.target for r in plan.runs)}")
    return dg.SensorResult(run_requests=run_requests, cursor=cursor.dump(),
                           asset_events=[_lag_observation(read, cursor, plan.message_count)])


def build_kafka_events_sensor(settings: KafkaSensorSettings | None = None, *, name: str = "kafka_events_sensor",
                              minimum_interval_seconds: int = 30,
                              default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
                              ) -> dg.SensorDefinition:
    """The sensor over `settings.topic` (from the environment when None)."""
    settings = settings or KafkaSensorSettings.from_env()

    @dg.sensor(name=name, jobs=[ingest_events_job, ingest_rejected_events_job],
               minimum_interval_seconds=minimum_interval_seconds, default_status=default_status,
               description=f"New {settings.topic} offsets -> one run per batch over the touched event_date range "
                           f"(raw/events + raw/rejected_events); commits offsets after the runs succeed.")
    def _kafka_events_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        return evaluate_kafka_tick(context, kafka, settings)

    return _kafka_events_sensor


kafka_events_sensor = build_kafka_events_sensor()
