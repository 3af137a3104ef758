"""`monitoring/gate_precision`: how precise the embedding gate is on the cases it serves.

Per day (and over the rolling window the shut-off judges), per label the serving gate predicted:
its audited gated cases (shadow audits by the LLM, `gate.health`, and analysts' ratings of gated
cases, which this asset adds to `models/gate_audits`), how many the audit confirmed, the realized
precision with its Wilson 95% interval, the gated share of the day, and whether the gate still
serves the label. The check WARNs when a label's lower bound is under the gate's target and ERRORs
when its point estimate is; a label whose upper bound is under the target is shut off here too (as
`enriched/cases` does after each micro-batch), so ratings alone can stop it.
"""

from datetime import datetime, timezone

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets.asset_keys import EMBEDDING_GATE, ENRICHED_CASES, EVALUATION_RATINGS, GATE_AUDITS, GATE_PRECISION
from llm_assets.automation import build_daily_derived
from llm_assets.gate import health
from llm_assets.gate.assets import gate_for_run
from llm_assets.metadata import markdown_table
from llm_assets.monitoring import plots
from llm_assets.partitions import daily_partitions
from llm_assets.resources.artifacts import ArtifactStore
from llm_assets.resources.delta import DeltaLakeStorage

MEETS_TARGET = "gate_precision_meets_target"
SCHEMA = {
    "event_date": pl.String, "gate_version": pl.String, "label": pl.String, "window_start": pl.String,
    "audited": pl.Int64, "confirmed": pl.Int64, "by_rating": pl.Int64, "precision": pl.Float64,
    "lower": pl.Float64, "upper": pl.Float64, "day_audited": pl.Int64, "day_gated": pl.Int64,
    "target": pl.Float64, "serving": pl.Boolean, "computed_at": pl.Datetime("us", "UTC"),
}


class GatePrecisionConfig(dg.Config):
    window_days: int = Field(default=health.DEFAULT_WINDOW_DAYS, description="days of audits judged, ending on the partition")
    min_audits_to_judge: int = Field(default=health.DEFAULT_MIN_AUDITS,
                                     description="audits a label needs before it is judged (check and shut-off)")


def _gated_rows(delta: DeltaLakeStorage, gate_version: str, days: list[str]) -> pl.DataFrame:
    if not delta.exists(ENRICHED_CASES):
        return pl.DataFrame(schema={"event_id": pl.String, "event_date": pl.String, "label": pl.String,
                                    "route": pl.String})
    return (delta.scan(ENRICHED_CASES).filter(pl.col("event_date").is_in(days))
            .filter(pl.col("gate_version") == gate_version)
            .select("event_id", "event_date", "label", "route").collect())


def rating_audits(delta: DeltaLakeStorage, gated: pl.DataFrame, gate_version: str) -> pl.DataFrame:
    """Analysts' ratings of gated cases not yet in `models/gate_audits`, as audit rows (source `rating`)."""
    if not delta.exists(EVALUATION_RATINGS) or not gated.height:
        return pl.DataFrame(schema=health.AUDITS_SCHEMA)
    ratings = delta.read(EVALUATION_RATINGS).select("event_id", pl.col("label").alias("audit_label"))
    found = gated.filter(pl.col("route") == "gate").join(ratings, on="event_id", how="inner")
    if delta.exists(GATE_AUDITS) and found.height:
        known = (delta.scan(GATE_AUDITS).filter((pl.col("audit_source") == "rating")
                                                & (pl.col("gate_version") == gate_version))
                 .select("event_id").collect())
        found = found.join(known, on="event_id", how="anti")
    now = datetime.now(timezone.utc)
    return found.select(
        "event_id", "event_date", pl.lit(gate_version).alias("gate_version"), "label", "audit_label",
        pl.lit("rating").alias("audit_source"), pl.lit(now).dt.cast_time_unit("us").alias("audited_at"),
    ).cast(health.AUDITS_SCHEMA)


@dg.asset(
    key=GATE_PRECISION,
    deps=[ENRICHED_CASES, EVALUATION_RATINGS, EMBEDDING_GATE],
    partitions_def=daily_partitions,
    check_specs=[dg.AssetCheckSpec(
        MEETS_TARGET, asset=GATE_PRECISION,
        description="Per label the gate serves: WARN when the Wilson 95% lower bound of its realized precision "
                    "is under the gate's target, ERROR when the point estimate is.")],
    kinds={"delta", "polars"},
    group_name="monitoring",
    automation_condition=build_daily_derived(ignore_updates_of=[EVALUATION_RATINGS, EMBEDDING_GATE]),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def gate_precision(context: dg.AssetExecutionContext, config: GatePrecisionConfig, delta: DeltaLakeStorage,
                   artifacts: ArtifactStore):
    """Realized precision of the serving embedding gate per label, on audited gated cases (see the module)."""
    day = context.partition_key
    gate = gate_for_run(context, artifacts)
    if gate is None:
        return dg.MaterializeResult(metadata={"gate_version": "none"}, check_results=[dg.AssetCheckResult(
            check_name=MEETS_TARGET, passed=True, metadata={"note": "no gate serves: nothing to judge"})])
    target = health.gate_target(gate)
    window = health.window_days(day, config.window_days)
    gated = _gated_rows(delta, gate.version, window)
    added = health.record_audits(delta, rating_audits(delta, gated, gate.version))
    audits = health.read_audits(delta, gate.version, window)
    precision = health.realized_precision(audits, gate.labels)
    shut = health.read_shutoffs(delta, gate.version)
    decided = health.decide_shutoffs(precision, shut, gate.version, target=target,
                                     min_audits=config.min_audits_to_judge)
    health.record_shutoffs(delta, decided)
    for row in decided.iter_rows(named=True):
        context.log.warning(f"gate {gate.version} stops serving {row['label']}: {row['reason']}")
        context.log_event(health.shutoff_observation(row))
    shut_now = set(shut) | set(decided["label"].to_list())

    today = gated.filter(pl.col("event_date") == day)
    day_audits = audits.filter(pl.col("event_date") == day)
    computed_at = datetime.now(timezone.utc)
    rows = []
    for label, p in precision.items():
        lower, upper = p.interval if p.audited else (None, None)
        rows.append({"event_date": day, "gate_version": gate.version, "label": label, "window_start": window[-1],
                     "audited": p.audited, "confirmed": p.confirmed, "by_rating": p.by_rating, "precision": p.precision,
                     "lower": lower, "upper": upper,
                     "day_audited": day_audits.filter(pl.col("label") == label).height,
                     "day_gated": today.filter((pl.col("route") == "gate") & (pl.col("label") == label)).height,
                     "target": target, "serving": label not in shut_now, "computed_at": computed_at})
    frame = pl.DataFrame(rows, schema=SCHEMA)
    delta.replace_partition(GATE_PRECISION, frame, partition_column="event_date", partition_value=day)

    judged = [r for r in rows if r["audited"] >= config.min_audits_to_judge]  # shut off or not: the truth
    under_point = [r["label"] for r in judged if r["precision"] < target]
    under_lower = [r["label"] for r in judged if r["lower"] < target]
    gated_share = today.filter(pl.col("route") == "gate").height / today.height if today.height else 0.0
    metadata: dict = {
        "dagster/row_count": frame.height,
        "gate_version": gate.version,
        "target_precision": target,
        "window": f"{window[-1]} .. {day}",
        "gated_share": round(gated_share, 4),
        "audited_in_window": int(audits.height),
        "ratings_added_as_audits": added,
        "labels_shut_off": dg.MetadataValue.json(sorted(shut_now)),
        **{f"precision/{r['label']}": float(r["precision"]) for r in rows if r["precision"] is not None},
        **{f"precision_lower/{r['label']}": float(r["lower"]) for r in rows if r["lower"] is not None},
        "by_label": markdown_table(
            ["label", "audited", "confirmed", "by rating", "precision", "95% interval", "gated today", "serving"],
            [(r["label"], r["audited"], r["confirmed"], r["by_rating"],
              "" if r["precision"] is None else f"{r['precision']:.3f}",
              "" if r["lower"] is None else f"[{r['lower']:.3f}, {r['upper']:.3f}]", r["day_gated"],
              "yes" if r["serving"] else "shut off") for r in rows]),
    }
    png = plots.gate_precision_plot(rows, target)
    if png is not None:
        metadata["plot_precision"] = dg.MetadataValue.md(plots.markdown_image(png, "gate precision by label"))
    severity = dg.AssetCheckSeverity.ERROR if under_point else dg.AssetCheckSeverity.WARN
    return dg.MaterializeResult(metadata=metadata, check_results=[dg.AssetCheckResult(
        check_name=MEETS_TARGET, passed=not under_lower, severity=severity,
        metadata={"under_target_point": dg.MetadataValue.json(under_point),
                  "under_target_lower_bound": dg.MetadataValue.json(under_lower),
                  "judged_labels": len(judged)})])
