"""Which enriched cases analysts rate, and what a sample row carries; no Dagster import.

A case is sampled when the hash of its `event_id` falls under the rate (a fixed fraction of
every day, the same in every process and on every re-run), and each label gets at least a
minimum of samples (the cases of that label with the smallest hashes), so a rare label is
rated too. Sampling is incremental: a day's cases are sampled as they arrive and a sample
once taken stays, whatever later cases or re-enrichments bring.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import polars as pl

from llm_assets.lib.redaction import redact

DEFAULT_RATE = 0.01
DEFAULT_MIN_PER_LABEL = 3

SAMPLES_SCHEMA = {
    "event_id": pl.String, "event_date": pl.String, "sample_fraction": pl.Float64, "sampled_by": pl.String,
    "label": pl.String, "confidence": pl.Float64, "severity": pl.Int32, "summary": pl.String,
    "actions": pl.String, "route": pl.String, "model_version": pl.String, "prompt_version": pl.String,
    "source_system": pl.String, "partner_id": pl.String, "text": pl.String, "pii_redacted": pl.Int32,
    "enriched_at": pl.Datetime("us", "UTC"), "sampled_at": pl.Datetime("us", "UTC"),
}
# What a sample takes from enriched/cases and from curated/cases.
ENRICHED_COLUMNS = ("event_id", "event_date", "label", "confidence", "severity", "summary", "actions", "route",
                    "model_version", "prompt_version", "enriched_at")
CURATED_COLUMNS = ("event_id", "source_system", "partner_id", "payload_raw")


def sample_fraction(event_id: str) -> float:
    """A number in [0, 1) fixed by the event id alone (sha256): the same in every process and version."""
    return int.from_bytes(hashlib.sha256(event_id.encode("utf-8")).digest()[:8], "big") / 2.0**64


def with_fractions(cases: pl.DataFrame) -> pl.DataFrame:
    return cases.with_columns(pl.Series("sample_fraction", [sample_fraction(e) for e in cases["event_id"]],
                                        dtype=pl.Float64))


def select_new_samples(enriched_day: pl.DataFrame, existing: pl.DataFrame, *, rate: float = DEFAULT_RATE,
                       min_per_label: int = DEFAULT_MIN_PER_LABEL) -> pl.DataFrame:
    """The enriched rows of a day to add to its samples, with `sample_fraction` and `sampled_by`.

    `existing`: the day's samples already taken (`event_id`, `label`); they count towards each
    label's minimum and are never returned again.
    """
    taken = set(existing["event_id"].to_list()) if existing.height else set()
    candidates = with_fractions(enriched_day.filter(~pl.col("event_id").is_in(list(taken))))
    by_rate = candidates.filter(pl.col("sample_fraction") < rate).with_columns(sampled_by=pl.lit("rate"))
    have: dict[str, int] = {}
    for label in (existing["label"].to_list() if existing.height else []) + by_rate["label"].to_list():
        have[label] = have.get(label, 0) + 1
    rest = candidates.filter(pl.col("sample_fraction") >= rate).sort("sample_fraction")
    top_ups = []
    for (label,), group in rest.group_by("label", maintain_order=True):
        missing = min_per_label - have.get(label, 0)
        if missing > 0:
            top_ups.append(group.head(missing).with_columns(sampled_by=pl.lit("label_minimum")))
    return pl.concat([by_rate, *top_ups], how="diagonal_relaxed").sort("event_id") if top_ups else by_rate.sort(
        "event_id")


def sample_rows(selected: pl.DataFrame, curated: pl.DataFrame, sampled_at: datetime) -> pl.DataFrame:
    """Sample rows: the enriched fields analysts rate, plus the case text, redacted.

    `curated`: the day's curated rows of the selected cases (`event_id`, `source_system`,
    `partner_id`, `payload_raw`). The raw payload never leaves this function unredacted.
    """
    if selected.is_empty():
        return pl.DataFrame(schema=SAMPLES_SCHEMA)
    joined = selected.join(curated.select(list(CURATED_COLUMNS)), on="event_id", how="left")
    redacted = [redact(text or "") for text in joined["payload_raw"].to_list()]
    return joined.with_columns(
        pl.Series("text", [r.text for r in redacted], dtype=pl.String),
        pl.Series("pii_redacted", [r.total for r in redacted], dtype=pl.Int32),
        pl.lit(sampled_at).cast(pl.Datetime("us", "UTC")).alias("sampled_at"),
    ).select([pl.col(c).cast(t) for c, t in SAMPLES_SCHEMA.items()])
