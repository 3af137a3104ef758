"""Which enriched cases get a ticket in the case tool, and what the ticket says; no Dagster import.

One ticket per case with severity at or above the threshold, never two: the cases already in
`monitoring/case_tickets` (keyed on `event_id`) are left out, whatever day or run opened them.
"""

from __future__ import annotations

import json

import polars as pl

DEFAULT_MIN_SEVERITY = 4

TICKETS_SCHEMA = {
    "event_id": pl.String, "event_date": pl.String, "label": pl.String, "severity": pl.Int32,
    "ticket_id": pl.String, "ticket_key": pl.String, "ticket_url": pl.String, "attempts": pl.Int32,
    "opened_at": pl.Datetime("us", "UTC"),
}


def cases_needing_tickets(enriched_day: pl.DataFrame, opened_ids: set[str], min_severity: int) -> pl.DataFrame:
    """The day's cases at or above `min_severity` that have no ticket yet, most severe first."""
    if enriched_day.is_empty():
        return enriched_day
    return (enriched_day.filter((pl.col("severity") >= min_severity) & ~pl.col("event_id").is_in(list(opened_ids)))
            .sort(["severity", "event_id"], descending=[True, False]))


def ticket_summary(case: dict) -> str:
    return f"[{case['label']}] {case['event_id']}"


def ticket_description(case: dict) -> str:
    """The case's summary and proposed actions, as plain text (the summary is already redacted)."""
    lines = [str(case.get("summary") or "").strip(), "",
             f"Severity {case['severity']}, label {case['label']} (confidence {float(case['confidence']):.2f}), "
             f"model {case.get('model_version') or 'unknown'}, event date {case['event_date']}.", "",
             "Proposed actions:"]
    try:
        actions = json.loads(case.get("actions") or "[]")
    except json.JSONDecodeError:
        actions = []
    proposed = [a for a in actions if isinstance(a, dict) and a.get("action")]
    lines += [f"- {a['action']} (approval: {a.get('approval_level', 'analyst')}): {a.get('reason', '')}"
              for a in proposed] or ["- none"]
    return "\n".join(lines)
