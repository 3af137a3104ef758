"""Assets of the evaluation domain: `evaluation/samples`, `evaluation/ratings`, `evaluation/quality_metrics`.

People in the loop: a deterministic sample of enriched cases is rated by analysts on the
rating page (`rating_app.py`, published to Kafka `cases.ratings`) or in files dropped in
`RATINGS_DROP_DIR`; the ratings are imported under a contract and turned into precision,
recall and action acceptance per model version. The logic lives in `sampling`, `ratings`
and `quality`; these assets bind it to Delta and Kafka.
"""

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets import settings
from llm_assets.asset_keys import (
    CURATED_CASES,
    ENRICHED_CASES,
    EVALUATION_QUALITY_METRICS,
    EVALUATION_RATINGS,
    EVALUATION_SAMPLES,
    IMPORTED_RATING_FILES,
    REJECTED_RATINGS,
)
from llm_assets.automation import build_daily_derived
from llm_assets.lib.redaction import find_pii
from llm_assets.evaluation import quality, ratings, sampling, trust
from llm_assets.evaluation.analysts import AnalystRegistry
from llm_assets.metadata import frame_table, markdown_table
from llm_assets.partitions import daily_partitions
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.kafka import KafkaResource, KafkaUnavailableError, TopicNotFoundError

NO_PII_IN_SAMPLES = "no_pii_in_samples"
LABEL_MINIMUM_MET = "samples_meet_label_minimum"
# Ratings are imported every 10 minutes; a run that finds nothing new records nothing.
RATINGS_IMPORT_CRON = "*/10 * * * *"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _day_rows(delta: DeltaLakeStorage, key: dg.AssetKey, day: str, columns: list[str] | None = None) -> pl.DataFrame:
    if not delta.exists(key):
        return pl.DataFrame()
    scan = delta.scan(key).filter(pl.col("event_date") == day)
    return (scan.select(columns) if columns else scan).collect()


# -- evaluation/samples ----------------------------------------------------------------------
class SamplesConfig(dg.Config):
    rate: float = Field(default=sampling.DEFAULT_RATE, description="share of each day's cases sampled (by hash)")
    min_per_label: int = Field(default=sampling.DEFAULT_MIN_PER_LABEL,
                               description="samples each label gets at least (when it has that many cases)")


SAMPLE_CHECKS = [
    dg.AssetCheckSpec(NO_PII_IN_SAMPLES, asset=EVALUATION_SAMPLES, blocking=True,
                      description="No email, card, phone, IBAN or national id in what analysts see "
                                  "(text, summary, actions) of the day's samples."),
    dg.AssetCheckSpec(LABEL_MINIMUM_MET, asset=EVALUATION_SAMPLES,
                      description="Every label of the day's enriched cases has at least min_per_label samples "
                                  "(or all its cases)."),
]


def _pii_findings(samples: pl.DataFrame) -> dict[str, int]:
    found: dict[str, int] = {}
    for row in samples.select("event_id", "text", "summary", "actions").iter_rows():
        kinds = [k for value in row[1:] for k in find_pii(value or "")]
        if kinds:
            found[row[0]] = len(kinds)
    return found


@dg.asset(
    key=EVALUATION_SAMPLES,
    deps=[ENRICHED_CASES, CURATED_CASES],
    partitions_def=daily_partitions,
    check_specs=SAMPLE_CHECKS,
    kinds={"delta", "polars"},
    group_name="evaluation",
    automation_condition=build_daily_derived(ignore_updates_of=[CURATED_CASES]),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def evaluation_samples(context: dg.AssetExecutionContext, config: SamplesConfig, delta: DeltaLakeStorage):
    """A deterministic sample of each day's enriched cases for analysts to rate.

    A case is sampled when the hash of its `event_id` falls under `rate` (default 1%), and each
    label gets at least `min_per_label` samples (default 3). Each sample carries what an analyst
    needs: the case text from `curated/cases`, redacted, with the label, confidence, severity,
    summary and proposed actions. Incremental: new enriched cases are sampled as they arrive
    (MERGE on `event_id`), and a sample once taken stays.
    """
    day = context.partition_key
    enriched = _day_rows(delta, ENRICHED_CASES, day, list(sampling.ENRICHED_COLUMNS))
    existing = _day_rows(delta, EVALUATION_SAMPLES, day, ["event_id", "label"])
    if existing.is_empty():
        existing = pl.DataFrame(schema={"event_id": pl.String, "label": pl.String})
    selected = (sampling.select_new_samples(enriched, existing, rate=config.rate, min_per_label=config.min_per_label)
                if enriched.height else pl.DataFrame())
    added = 0
    if selected.height:
        curated = (delta.scan(CURATED_CASES)
                   .filter((pl.col("event_date") == day) & pl.col("event_id").is_in(selected["event_id"].to_list()))
                   .select(list(sampling.CURATED_COLUMNS)).collect())
        rows = sampling.sample_rows(selected, curated, _now())
        delta.merge(EVALUATION_SAMPLES, rows, ["event_id"], partition_column="event_date", partition_value=day)
        added = rows.height
    samples = _day_rows(delta, EVALUATION_SAMPLES, day)
    if samples.is_empty():
        samples = pl.DataFrame(schema=sampling.SAMPLES_SCHEMA)
    context.log.info(f"evaluation/samples {day}: {added} new samples, {samples.height} in all, "
                     f"from {enriched.height} enriched cases")

    pii = _pii_findings(samples)
    case_counts = dict(enriched.group_by("label").len().iter_rows()) if enriched.height else {}
    sample_counts = dict(samples.group_by("label").len().iter_rows()) if samples.height else {}
    short = {label: {"cases": n, "samples": sample_counts.get(label, 0)} for label, n in case_counts.items()
             if sample_counts.get(label, 0) < min(n, config.min_per_label)}
    by_label = sorted((label, case_counts.get(label, 0), sample_counts.get(label, 0))
                      for label in set(case_counts) | set(sample_counts))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": samples.height,
            "samples_added": added,
            "enriched_cases": enriched.height,
            "rate": config.rate,
            "min_per_label": config.min_per_label,
            "by_label": markdown_table(["label", "enriched cases", "samples"], by_label),
            "preview": frame_table(samples.select("event_id", "label", "confidence", "severity", "sampled_by",
                                                  "text")),
        },
        check_results=[
            dg.AssetCheckResult(check_name=NO_PII_IN_SAMPLES, passed=not pii, metadata={
                "samples": samples.height, "samples_with_pii": len(pii),
                "examples": ", ".join(sorted(pii)[:10]) or "none"}),
            dg.AssetCheckResult(check_name=LABEL_MINIMUM_MET, passed=not short,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"labels_short": dg.MetadataValue.json(short)}),
        ],
    )


# -- evaluation/ratings ----------------------------------------------------------------------
class RatingsConfig(dg.Config):
    topic: str = Field(default=settings.RATINGS_TOPIC, description="the Kafka topic of ratings (key = event_id)")
    consumer_group: str = Field(default=settings.RATINGS_CONSUMER_GROUP,
                                description="holds the offsets imported so far (committed after the write)")
    drop_dir: str = Field(default="", description="folder of rating files (CSV, JSONL); empty = RATINGS_DROP_DIR")
    idle_timeout_s: float = Field(default=1.0, description="stop reading the topic after this long without a message")


def _read_topic(context: dg.AssetExecutionContext, kafka: KafkaResource, config: RatingsConfig):
    """New rating messages since the group's committed offsets: (parsed, next offsets, messages read)."""
    try:
        partitions = kafka.topic_partitions(config.topic)
    except TopicNotFoundError:
        context.log.warning(f"topic {config.topic} does not exist yet: no ratings from Kafka")
        return ratings.ParsedRatings(), {}, 0
    except KafkaUnavailableError as exc:
        # Files can still be imported; the messages wait in the topic for the next run.
        context.log.warning(f"{exc}: ratings from Kafka are imported on a later run")
        return ratings.ParsedRatings(), {}, 0
    committed = kafka.committed_offsets(config.consumer_group, config.topic, partitions)
    read = kafka.read(config.topic, committed, idle_timeout_s=config.idle_timeout_s,
                      first_answer_timeout_s=kafka.request_timeout_s)
    parsed = ratings.ParsedRatings()
    for chunk in read:
        parsed.extend(ratings.parse_messages(
            (config.topic, p, o, k, v) for p, o, k, v in zip(chunk.partitions, chunk.offsets, chunk.keys, chunk.values)))
    if read.progress.errors:
        context.log.warning(f"reading {config.topic}: {read.progress.errors[:3]}")
    moved = {p: o for p, o in read.progress.next_offsets.items() if o != committed.get(p)}
    return parsed, moved, read.progress.messages


def _new_files(delta: DeltaLakeStorage, folder: Path) -> list[tuple[Path, bytes, str]]:
    """Rating files not imported yet, as they are now (a changed file is imported again)."""
    seen: set[tuple[str, str]] = set()
    if delta.exists(IMPORTED_RATING_FILES):
        seen = set(delta.read(IMPORTED_RATING_FILES).select("file_name", "sha256").iter_rows())
    found = []
    for path in ratings.rating_files(folder):
        content = path.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if (path.name, digest) not in seen:
            found.append((path, content, digest))
    return found


@dg.asset(
    key=EVALUATION_RATINGS,
    deps=[EVALUATION_SAMPLES],
    kinds={"kafka", "delta", "polars"},
    group_name="evaluation",
    output_required=False,  # nothing new, nothing recorded: downstream metrics are not recomputed
    automation_condition=dg.AutomationCondition.cron_tick_passed(RATINGS_IMPORT_CRON)
    & ~dg.AutomationCondition.in_progress(),
)
def evaluation_ratings(context: dg.AssetExecutionContext, config: RatingsConfig, delta: DeltaLakeStorage,
                       kafka: KafkaResource):
    """Analyst ratings of sampled cases: label correct (or the right label) and actions accepted.

    Imported from the Kafka topic `cases.ratings` (the rating page publishes there; offsets
    are committed to a consumer group after the write, so a run reads only new messages) and
    from CSV or JSONL files dropped in `RATINGS_DROP_DIR` (each file version once). Every row
    is checked against the ratings contract and against the sample it rates; bad rows go to
    `evaluation/rejected_ratings` with their reasons and the good rows are kept. The latest
    rating per (`event_id`, `analyst`) wins. `text` (redacted) and `label` (the right label)
    let `models/embedding_gate` train on the ratings. A run with nothing new records nothing.
    """
    now = _now()
    folder = Path(config.drop_dir) if config.drop_dir else settings.ratings_drop_dir()
    parsed, next_offsets, messages = _read_topic(context, kafka, config)
    files = _new_files(delta, folder)
    file_rows = []
    for path, content, digest in files:
        from_file, rows = ratings.parse_file(path.name, content)
        parsed.extend(from_file)
        file_rows.append({"file_name": path.name, "sha256": digest, "rows": rows,
                          "accepted": len(from_file.accepted), "rejected": len(from_file.rejected),
                          "imported_at": now})
    if not messages and not files:
        context.log.info(f"no new ratings on {config.topic} or in {folder}")
        return

    ids = sorted({a.rating.event_id for a in parsed.accepted})
    samples = delta.read_where(EVALUATION_SAMPLES, "event_id", ids) if ids and delta.exists(EVALUATION_SAMPLES) \
        else pl.DataFrame()
    rows, misfits = ratings.rating_rows(parsed.accepted, samples, now)
    rejected = parsed.rejected + misfits
    stored = delta.read_where(EVALUATION_RATINGS, "event_id", ids) if ids and delta.exists(EVALUATION_RATINGS) \
        else pl.DataFrame()
    to_write = ratings.latest_ratings(rows, stored)
    written = (delta.merge(EVALUATION_RATINGS, to_write, ["event_id", "analyst"], merge_schema=True)
               if to_write.height else {})  # merge_schema: tables from before `auth_method` gain it
    if rejected:
        delta.merge(REJECTED_RATINGS, ratings.rejected_frame(rejected, now), ["source_ref", "raw_sha256"])
    if file_rows:
        delta.merge(IMPORTED_RATING_FILES, pl.DataFrame(file_rows, schema=ratings.IMPORTED_FILES_SCHEMA),
                    ["file_name", "sha256"])
    # Only now: a run that failed above re-reads the same messages, and the MERGEs make that harmless.
    kafka.commit_offsets(config.consumer_group, config.topic, next_offsets)

    total = delta.count(EVALUATION_RATINGS) if delta.exists(EVALUATION_RATINGS) else 0
    context.log.info(f"evaluation/ratings: {messages} messages, {len(files)} files, {rows.height} valid, "
                     f"{len(rejected)} rejected, {to_write.height} written")
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": total,
        "messages_read": messages,
        "files_imported": markdown_table(["file", "rows", "accepted", "rejected"],
                                         [(f["file_name"], f["rows"], f["accepted"], f["rejected"]) for f in file_rows]),
        "ratings_valid": rows.height,
        "ratings_written": to_write.height,
        "ratings_superseded": rows.height - to_write.height,
        "ratings_inserted": int(written.get("inserted") or 0),
        "ratings_updated": int(written.get("updated") or 0),
        "rejected": len(rejected),
        # JSON, not a table: a reason is only useful whole (table cells are cut).
        "rejections": dg.MetadataValue.json([{"source": r.source, "where": r.source_ref, "reasons": list(r.reasons)}
                                             for r in rejected[:20]]),
        "offsets_committed": dg.MetadataValue.json({str(p): o for p, o in sorted(next_offsets.items())}),
        "drop_dir": dg.MetadataValue.path(str(folder)),
    })


# -- evaluation/quality_metrics --------------------------------------------------------------
@dg.asset(
    key=EVALUATION_QUALITY_METRICS,
    deps=[EVALUATION_RATINGS, EVALUATION_SAMPLES],
    partitions_def=daily_partitions,
    kinds={"delta", "polars"},
    group_name="evaluation",
    automation_condition=build_daily_derived(),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def evaluation_quality_metrics(context: dg.AssetExecutionContext, delta: DeltaLakeStorage, artifacts: ArtifactStore):
    """Precision and recall per label and the action acceptance rate, per model version, for the
    cases of one day as analysts rated them (`evaluation/ratings`).

    One row per (model version, label), plus a row `all` per model version (share of correct
    labels, every action). Each analyst's rating counts once. The partition is replaced on
    each run, so it always reflects the ratings as they are now.

    Beside them, each analyst's agreement (Cohen's kappa) with the other analysts and with the model,
    over all their ratings since their last review (`evaluation.trust`): an analyst under the floor is
    flagged, and their ratings are quarantined from training and golden cases until
    `llm-assets analysts release NAME`.
    """
    day = context.partition_key
    rated = _day_rows(delta, EVALUATION_RATINGS, day)
    metrics = quality.quality_metrics(rated, day=day, computed_at=_now())
    delta.replace_partition(EVALUATION_QUALITY_METRICS, metrics, partition_column="event_date", partition_value=day)
    overall = metrics.filter(pl.col("label") == quality.ALL_LABELS)
    every = delta.read(EVALUATION_RATINGS) if delta.exists(EVALUATION_RATINGS) else pl.DataFrame()
    agreement = trust.analyst_agreement(every, AnalystRegistry(artifacts).released()) if every.height else []
    flagged = [a for a in agreement if a.flagged]
    for a in flagged:
        context.log.warning(f"analyst {a.analyst} flagged, ratings quarantined: {a.reason}")

    def _k(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    metadata = {
        "analysts_flagged": len(flagged),
        "analyst_agreement": markdown_table(
            ["analyst", "ratings", "kappa vs model", "shared ratings", "kappa vs analysts", "flagged"],
            [(a.analyst, a.ratings, _k(a.kappa_model), a.peer_pairs, _k(a.kappa_peers), a.reason or "")
             for a in agreement]),
        "flagged_analysts": dg.MetadataValue.json([{"analyst": a.analyst, "reason": a.reason} for a in flagged]),
        "dagster/row_count": metrics.height,
        "ratings": rated.height,
        "metrics": markdown_table(
            ["model version", "label", "ratings", "precision", "recall", "actions accepted"],
            [(r["model_version"], r["label"], r["ratings"], _pct(r["precision"]), _pct(r["recall"]),
              f"{r['actions_accepted']}/{r['actions_proposed']} ({_pct(r['action_acceptance_rate'])})")
             for r in metrics.iter_rows(named=True)]),
    }
    if overall.height == 1:
        metadata["label_accuracy"] = float(overall["precision"][0])
        if overall["action_acceptance_rate"][0] is not None:
            metadata["action_acceptance_rate"] = float(overall["action_acceptance_rate"][0])
    return dg.MaterializeResult(metadata=metadata)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"
