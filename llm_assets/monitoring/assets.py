"""Assets of the monitoring domain: `monitoring/drift_report` and `monitoring/case_tickets`.

Thin shells: the statistics are in `drift`, the figures in `plots`, the ticket contents in
`tickets`; these assets read the Delta tables, embed the redacted texts, call the case tool
and write what they found.
"""

from datetime import date, datetime, timedelta, timezone

import dagster as dg
import polars as pl
from pydantic import Field

from llm_assets.asset_keys import CASE_TICKETS, CURATED_CASES, DRIFT_REPORT, ENRICHED_CASES
from llm_assets.automation import build_daily_derived
from llm_assets.domain import current_pack
from llm_assets.lib.redaction import redact_cached
from llm_assets.evaluation.sampling import sample_fraction
from llm_assets.metadata import frame_table, markdown_table
from llm_assets.monitoring import drift, plots, tickets
from llm_assets.partitions import daily_partitions
from llm_assets.resources.case_tool import CaseToolRejected, CaseToolResource, CaseToolUnavailable
from llm_assets.resources.delta import DeltaLakeStorage
from llm_assets.resources.embedder import EmbedderResource

NO_DRIFT = "no_drift_detected"
TICKETS_OPENED = "case_tickets_opened"

DRIFT_SCHEMA = {
    "event_date": pl.String, "metric": pl.String, "value": pl.Float64, "threshold": pl.Float64,
    "drift_detected": pl.Boolean, "method": pl.String, "reference_start": pl.String, "reference_end": pl.String,
    "reference_rows": pl.Int64, "current_rows": pl.Int64, "computed_at": pl.Datetime("us", "UTC"),
}


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- monitoring/drift_report -----------------------------------------------------------------
class DriftConfig(dg.Config):
    reference_days: int = Field(default=7, description="the reference window: this many days before the partition")
    max_texts_per_window: int = Field(default=1000, description="texts embedded per window (a fixed hash sample)")
    auc_threshold: float = Field(default=drift.AUC_THRESHOLD, description="domain-classifier ROC AUC above which "
                                                                          "texts drifted (windows over 1,000 rows)")
    bootstrap_quantile: float = Field(default=drift.BOOTSTRAP_QUANTILE,
                                      description="random-classifier AUC quantile (windows of 1,000 rows or fewer)")
    psi_threshold: float = Field(default=drift.PSI_THRESHOLD)
    js_threshold: float = Field(default=drift.JS_THRESHOLD)
    ks_alpha: float = Field(default=drift.KS_ALPHA, description="confidence drifts when the KS p-value is below")
    chi2_alpha: float = Field(default=drift.CHI2_ALPHA, description="a label-mix shift must also be significant "
                                                                    "at this level (chi-squared test)")

    def settings(self) -> drift.DriftSettings:
        return drift.DriftSettings(auc_threshold=self.auc_threshold, bootstrap_quantile=self.bootstrap_quantile,
                                   psi_threshold=self.psi_threshold, js_threshold=self.js_threshold,
                                   ks_alpha=self.ks_alpha, chi2_alpha=self.chi2_alpha)


def _window_cases(delta: DeltaLakeStorage, days: list[str]) -> pl.DataFrame:
    """Enriched cases of `days` with their case text (from curated/cases, redacted later)."""
    schema = {"event_id": pl.String, "event_date": pl.String, "label": pl.String, "confidence": pl.Float64,
              "payload_raw": pl.String}
    if not delta.exists(ENRICHED_CASES):
        return pl.DataFrame(schema=schema)
    enriched = (delta.scan(ENRICHED_CASES).filter(pl.col("event_date").is_in(days))
                .select("event_id", "event_date", "label", "confidence"))
    if not delta.exists(CURATED_CASES):
        return enriched.with_columns(pl.lit(None, dtype=pl.String).alias("payload_raw")).collect()
    curated = (delta.scan(CURATED_CASES).filter(pl.col("event_date").is_in(days))
               .select("event_id", "event_date", "payload_raw"))
    return enriched.join(curated, on=["event_id", "event_date"], how="left").collect()


def _texts(window: pl.DataFrame, limit: int) -> list[str]:
    """Up to `limit` redacted case texts of a window, the same ones on every run (by event_id hash)."""
    with_text = window.filter(pl.col("payload_raw").is_not_null())
    if with_text.height > limit:
        order = sorted(range(with_text.height), key=lambda i: sample_fraction(with_text["event_id"][i]))
        with_text = with_text[sorted(order[:limit])]
    return [redact_cached(t) for t in with_text["payload_raw"].to_list()]


@dg.asset(
    key=DRIFT_REPORT,
    deps=[ENRICHED_CASES, CURATED_CASES],
    partitions_def=daily_partitions,
    check_specs=[dg.AssetCheckSpec(NO_DRIFT, asset=DRIFT_REPORT,
                                   description="WARN when the day's case texts, label mix or confidence drifted "
                                               "from the reference window.")],
    kinds={"scikit-learn", "sentence-transformers", "delta"},
    group_name="monitoring",
    automation_condition=build_daily_derived(ignore_updates_of=[CURATED_CASES]),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, delta: DeltaLakeStorage,
                 embedder: EmbedderResource):
    """Drift of one day's enriched cases against a reference window (default: the 7 days before).

    - Embedding drift of the redacted case texts: ROC AUC of a domain classifier (logistic
      regression, held-out half; above 0.55, or above a bootstrapped random-classifier AUC for
      windows of 1,000 rows or fewer) and the distance between the windows' mean embeddings.
    - Label-mix drift: PSI and Jensen-Shannon distance of the label shares (both above their
      thresholds, and significant by a chi-squared test).
    - Confidence drift: two-sample Kolmogorov-Smirnov test.

    One row per metric in the Delta table; the metadata shows a table and plots of the three
    comparisons; the `no_drift_detected` check warns when any of them drifted.
    """
    day = context.partition_key
    current_day = date.fromisoformat(day)
    reference_days = [(current_day - timedelta(days=k)).isoformat() for k in range(config.reference_days, 0, -1)]
    cases = _window_cases(delta, reference_days + [day])
    reference = cases.filter(pl.col("event_date").is_in(reference_days))
    current = cases.filter(pl.col("event_date") == day)

    ref_texts = _texts(reference, config.max_texts_per_window)
    cur_texts = _texts(current, config.max_texts_per_window)
    enough = min(len(ref_texts), len(cur_texts)) >= drift.MIN_ROWS
    vectors = embedder.encode(ref_texts + cur_texts) if enough else None
    report = drift.drift_report(
        reference_embeddings=vectors[:len(ref_texts)] if enough else None,
        current_embeddings=vectors[len(ref_texts):] if enough else None,
        reference_labels=reference["label"].to_list(), current_labels=current["label"].to_list(),
        reference_confidence=reference["confidence"].to_list(), current_confidence=current["confidence"].to_list(),
        settings=config.settings(), categories=current_pack().labels)

    computed_at = _now()
    rows = pl.DataFrame([{**row, "event_date": day, "reference_start": reference_days[0],
                          "reference_end": reference_days[-1], "reference_rows": reference.height,
                          "current_rows": current.height, "computed_at": computed_at}
                         for row in report.metric_rows()], schema=DRIFT_SCHEMA)
    delta.replace_partition(DRIFT_REPORT, rows, partition_column="event_date", partition_value=day)

    metadata: dict = {
        "dagster/row_count": rows.height,
        "drift_detected": report.drifted,
        "drifted": ", ".join(report.drifted_parts()) or "none",
        "reference_window": f"{reference_days[0]} .. {reference_days[-1]}",
        "reference_cases": reference.height,
        "current_cases": current.height,
        "texts_compared": f"{len(ref_texts)} reference, {len(cur_texts)} current",
        "metrics": markdown_table(
            ["metric", "value", "threshold", "drift"],
            [(r["metric"], f"{r['value']:.4f}", "" if r["threshold"] is None else f"{r['threshold']:.4f}",
              {True: "yes", False: "no", None: ""}[r["drift_detected"]]) for r in rows.iter_rows(named=True)]),
    }
    if report.notes:
        metadata["notes"] = "; ".join(report.notes)
    figures = {
        "plot_embedding": (plots.embedding_plot(report), "domain classifier scores"),
        "plot_label_mix": (plots.label_mix_plot(report), "label mix"),
        "plot_confidence": (plots.confidence_plot(report, reference["confidence"].to_list(),
                                                  current["confidence"].to_list()), "confidence"),
    }
    for name, (png, alt) in figures.items():
        if png is not None:
            metadata[name] = dg.MetadataValue.md(plots.markdown_image(png, alt))
    summary = report.summary()
    return dg.MaterializeResult(metadata=metadata, check_results=[dg.AssetCheckResult(
        check_name=NO_DRIFT, passed=not report.drifted, severity=dg.AssetCheckSeverity.WARN,
        metadata={"drifted": ", ".join(report.drifted_parts()) or "none",
                  "summary": dg.MetadataValue.json(summary)})])


# -- monitoring/case_tickets -----------------------------------------------------------------
class CaseTicketsConfig(dg.Config):
    min_severity: int = Field(default=tickets.DEFAULT_MIN_SEVERITY, description="cases at or above get a ticket")
    record_every: int = Field(default=20, description="tickets recorded in Delta after every N opened")


def _record(delta: DeltaLakeStorage, day: str, opened: list[dict]) -> None:
    if opened:
        delta.merge(CASE_TICKETS, pl.DataFrame(opened, schema=tickets.TICKETS_SCHEMA), ["event_id"],
                    partition_column="event_date", partition_value=day)
        opened.clear()


@dg.asset(
    key=CASE_TICKETS,
    deps=[ENRICHED_CASES],
    partitions_def=daily_partitions,
    check_specs=[dg.AssetCheckSpec(TICKETS_OPENED, asset=CASE_TICKETS,
                                   description="WARN when the case tool refused a ticket (4xx) for some case.")],
    kinds={"delta", "jira"},
    group_name="monitoring",
    automation_condition=build_daily_derived(),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def case_tickets(context: dg.AssetExecutionContext, config: CaseTicketsConfig, delta: DeltaLakeStorage,
                 case_tool: CaseToolResource):
    """One ticket in the case tool (Jira's create-issue API) per enriched case of severity >= 4.

    The summary reads `[label] event_id`; the description holds the case summary and the
    proposed actions. Idempotent on `event_id`: every ticket opened is recorded here (Delta,
    MERGE on `event_id`) and a case with a ticket never gets a second one, across re-runs and
    restarts. 5xx answers and connection errors are retried with backoff; a 4xx is reported for
    its case without losing the others. Off until `CASE_TOOL_URL` and `CASE_TOOL_PROJECT` are
    set: the run then reports "not configured".
    """
    day = context.partition_key
    enriched = pl.DataFrame()
    if delta.exists(ENRICHED_CASES):
        enriched = (delta.scan(ENRICHED_CASES).filter(pl.col("event_date") == day)
                    .select("event_id", "event_date", "label", "confidence", "severity", "summary", "actions",
                            "model_version").collect())
    eligible = enriched.filter(pl.col("severity") >= config.min_severity) if enriched.height else enriched
    if not case_tool.configured:
        context.log.info(f"case tool not configured: {eligible.height} cases of severity >= {config.min_severity} "
                         f"on {day} get no ticket")
        return dg.MaterializeResult(
            metadata={"status": "not configured", "eligible_cases": eligible.height,
                      "how_to_enable": "set CASE_TOOL_URL, CASE_TOOL_PROJECT (and CASE_TOOL_USER / CASE_TOOL_TOKEN)"},
            check_results=[dg.AssetCheckResult(check_name=TICKETS_OPENED, passed=True,
                                               metadata={"status": "not configured"})])

    ids = eligible["event_id"].to_list() if eligible.height else []
    already = set()
    if ids and delta.exists(CASE_TICKETS):
        already = set(delta.read_where(CASE_TICKETS, "event_id", ids)["event_id"].to_list())
    todo = tickets.cases_needing_tickets(eligible, already, config.min_severity)
    pending: list[dict] = []
    opened, refused, unavailable = [], [], None
    try:
        for case in todo.iter_rows(named=True):
            try:
                ticket = case_tool.create_issue(tickets.ticket_summary(case), tickets.ticket_description(case))
            except CaseToolRejected as exc:
                refused.append((case["event_id"], exc.status, exc.body[:200]))
                context.log.warning(f"case tool refused the ticket of {case['event_id']}: {exc}")
                continue
            row = {"event_id": case["event_id"], "event_date": day, "label": case["label"],
                   "severity": case["severity"], "ticket_id": ticket.id, "ticket_key": ticket.key,
                   "ticket_url": ticket.url, "attempts": ticket.attempts, "opened_at": _now()}
            pending.append(row)
            opened.append(row)
            if len(pending) >= config.record_every:
                _record(delta, day, pending)
    except CaseToolUnavailable as exc:
        unavailable = str(exc)
    finally:
        _record(delta, day, pending)  # whatever happened, every ticket opened is recorded
    if unavailable:
        raise dg.Failure(
            description=f"the case tool is unavailable ({unavailable}); {len(opened)} tickets were opened and "
                        f"recorded before that, the rest are opened on the next run",
            metadata={"opened": len(opened), "refused": len(refused)})

    recorded = delta.read(CASE_TICKETS, partition_column="event_date", partition_values=[day]) \
        if delta.exists(CASE_TICKETS) else pl.DataFrame(schema=tickets.TICKETS_SCHEMA)
    return dg.MaterializeResult(
        metadata={
            "status": "configured",
            "dagster/row_count": recorded.height,
            "eligible_cases": eligible.height,
            "already_ticketed": len(already),
            "opened_now": len(opened),
            "refused": len(refused),
            "refusals": markdown_table(["event_id", "HTTP status", "answer"], refused[:20]),
            "tickets": frame_table(pl.DataFrame(opened, schema=tickets.TICKETS_SCHEMA)
                                   .select("event_id", "label", "severity", "ticket_key", "ticket_url")),
        },
        check_results=[dg.AssetCheckResult(
            check_name=TICKETS_OPENED, passed=not refused, severity=dg.AssetCheckSeverity.WARN,
            metadata={"refused": len(refused), "examples": ", ".join(e for e, _, _ in refused[:10]) or "none"})])
